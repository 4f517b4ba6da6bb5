"""The rollout split (what a channel view shows) agrees with what devices are served."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from lumora_ota.domain.model import UpdateRecord
from lumora_ota.domain.selection import SelectionRequest, select_update
from lumora_ota.domain.split import Share, rollout_split

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEVICES = [f"device-{i}" for i in range(4000)]


def upd(n: int, rollout: int = 100, **changes: object) -> UpdateRecord:
    base: dict[str, object] = {
        "id": f"u{n}",
        "group_id": f"g{n}",
        "project_id": "p",
        "channel": "production",
        "platform": "ios",
        "runtime_version": "1",
        "created_at": T0 + timedelta(minutes=n),
        "rollout": rollout,
    }
    base.update(changes)
    return UpdateRecord(**base)  # type: ignore[arg-type]


def served_fractions(candidates: list[UpdateRecord]) -> dict[str | None, float]:
    counts: Counter[str | None] = Counter()
    for device in DEVICES:
        request = SelectionRequest("production", "ios", "1", device_id=device)
        selection = select_update(candidates, request)
        counts[selection.update.id if selection.update is not None else None] += 1
    return {k: v * 100 / len(DEVICES) for k, v in counts.items()}


def by_id(shares: tuple[Share, ...]) -> dict[str | None, float]:
    return {(s.update.id if s.update else None): s.percent for s in shares}


def test_auto_paused_update_shows_where_devices_really_go() -> None:
    # The case: the newest update is at 0 % (auto-paused); devices get the one before.
    split = rollout_split([upd(2, 0), upd(1, 100)], "1")
    assert by_id(split) == {"u2": 0.0, "u1": 100.0}


def test_partial_rollouts_chain_down_to_nothing() -> None:
    split = rollout_split([upd(3, 20), upd(2, 50), upd(1, 100, status="rolled_back")], "1")
    assert by_id(split) == {"u3": 20.0, "u2": 40.0, None: 40.0}
    assert sum(s.percent for s in split) == 100.0


def test_paused_channel_serves_nothing() -> None:
    assert rollout_split([upd(1)], "1", paused=True) == (Share(None, 100.0),)


def test_marker_takes_everyone_left_and_runtime_must_match() -> None:
    marker = upd(3, kind="rollback_to_embedded")
    split = rollout_split([upd(4, 10), marker, upd(2), upd(1, runtime_version="2")], "1")
    assert by_id(split) == {"u4": 10.0, "u3": 90.0}
    ranged = [upd(4, 10), upd(1, runtime_version="^1.0.0")]
    assert by_id(rollout_split(ranged, "1.2.0")) == {"u1": 100.0}


candidate = st.one_of(
    st.tuples(st.sampled_from([0, 5, 25, 50, 75, 100]), st.just("update"), st.booleans()),
    st.tuples(st.just(100), st.just("rollback_to_embedded"), st.booleans()),
)


@settings(max_examples=20, deadline=None)
@given(st.lists(candidate, min_size=1, max_size=4))
def test_split_matches_the_selection_engine(specs: list[tuple[int, str, bool]]) -> None:
    candidates = [
        upd(len(specs) - i, rollout, kind=kind, status="active" if active else "rolled_back")
        for i, (rollout, kind, active) in enumerate(specs)
    ]
    expected = by_id(rollout_split(candidates, "1"))
    measured = served_fractions(candidates)
    for key in set(expected) | set(measured):
        # 4000 devices: a share's sampling error is below 0.8 points (1 sigma); allow 3.5.
        assert abs(expected.get(key, 0.0) - measured.get(key, 0.0)) < 3.5, (key, specs)
