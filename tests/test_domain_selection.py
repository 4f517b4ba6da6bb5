"""The selection engine, directly on domain records."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from lumora_ota.domain.model import AssetRecord, UpdateRecord
from lumora_ota.domain.rollout import in_rollout
from lumora_ota.domain.selection import (
    IndexedCandidates,
    Selection,
    SelectionRequest,
    is_eligible,
    select_update,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BUNDLE = AssetRecord("bundles/ios.js", "ab" * 32, 10, "application/javascript", ".js")


def upd(n: int, **changes: object) -> UpdateRecord:
    """Update number ``n`` (higher is newer) on production/ios, runtime 1."""
    base = UpdateRecord(
        id=f"u{n}",
        group_id=f"g{n}",
        project_id="p",
        channel="production",
        platform="ios",
        runtime_version="1",
        created_at=T0 + timedelta(minutes=n),
        launch_asset=BUNDLE,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def newest_first(*updates: UpdateRecord) -> list[UpdateRecord]:
    return sorted(updates, key=lambda u: u.created_at, reverse=True)


def req(**changes: object) -> SelectionRequest:
    base = SelectionRequest(channel="production", platform="ios", runtime_version="1")
    return replace(base, **changes)  # type: ignore[arg-type]


def test_newest_active_update_is_served() -> None:
    sel = select_update(newest_first(upd(1), upd(2), upd(3)), req())
    assert sel.kind == "update" and sel.update is not None and sel.update.id == "u3"
    assert sel.update_available and not sel.is_mandatory


def test_nothing_to_serve() -> None:
    assert select_update([], req()).kind == "no_update"
    assert select_update([], req()).update is None


def test_other_channel_platform_and_runtime_are_ignored() -> None:
    cands = newest_first(
        upd(1),
        upd(2, channel="staging"),
        upd(3, platform="android"),
        upd(4, runtime_version="2"),
    )
    sel = select_update(cands, req())
    assert sel.update is not None and sel.update.id == "u1"


def test_runtime_ranges_match_semver_devices() -> None:
    cands = newest_first(upd(1, runtime_version="1.2.0"), upd(2, runtime_version="^1.2.0"))
    sel = select_update(cands, req(runtime_version="1.4.1"))
    assert sel.update is not None and sel.update.id == "u2"
    sel = select_update(cands, req(runtime_version="1.2.0"))
    assert sel.update is not None and sel.update.id == "u2"
    assert select_update(cands, req(runtime_version="2.0.0")).kind == "no_update"


def test_rolled_back_updates_are_skipped() -> None:
    sel = select_update(newest_first(upd(1), upd(2, status="rolled_back")), req())
    assert sel.update is not None and sel.update.id == "u1"


def test_device_on_the_chosen_update_gets_no_update() -> None:
    sel = select_update(newest_first(upd(1), upd(2)), req(current_update_id="u2"))
    assert sel.kind == "no_update"
    assert sel.update is not None and sel.update.id == "u2"  # protocol 0 re-serves it
    assert not sel.update_available


def test_rollback_to_embedded_marker_yields_the_directive() -> None:
    marker = upd(3, kind="rollback_to_embedded", launch_asset=None)
    sel = select_update(newest_first(upd(1), upd(2), marker), req(current_update_id="u2"))
    assert sel.kind == "rollback_to_embedded" and sel.update == marker


def test_rollback_when_already_on_embedded_is_no_update() -> None:
    marker = upd(3, kind="rollback_to_embedded", launch_asset=None)
    sel = select_update(
        newest_first(upd(1), marker), req(current_update_id="emb", embedded_update_id="emb")
    )
    assert sel.kind == "no_update" and sel.update is None


def test_update_newer_than_the_marker_wins() -> None:
    marker = upd(2, kind="rollback_to_embedded", launch_asset=None)
    sel = select_update(newest_first(upd(1), marker, upd(3)), req())
    assert sel.kind == "update" and sel.update is not None and sel.update.id == "u3"


def test_devices_outside_the_rollout_get_the_previous_update() -> None:
    partial = upd(2, rollout=30)
    cands = newest_first(upd(1), partial)
    for i in range(200):
        device = f"device-{i}"
        sel = select_update(cands, req(device_id=device))
        expected = "u2" if in_rollout("u2", device, 30) else "u1"
        assert sel.update is not None and sel.update.id == expected
    # No device id: only 100% rollouts.
    sel = select_update(cands, req())
    assert sel.update is not None and sel.update.id == "u1"


def test_recently_failed_updates_are_not_offered_again() -> None:
    sel = select_update(newest_first(upd(1), upd(2)), req(failed_update_ids=frozenset({"u2"})))
    assert sel.update is not None and sel.update.id == "u1"


def test_mandatory_when_a_skipped_update_was_mandatory() -> None:
    cands = newest_first(upd(1), upd(2, mandatory=True), upd(3))
    assert select_update(cands, req(current_update_id="u1")).is_mandatory
    # Already past the mandatory one: not mandatory.
    assert not select_update(cands, req(current_update_id="u2")).is_mandatory
    # Unknown current (embedded): every update up to the served one counts.
    assert select_update(cands, req(current_update_id="embedded")).is_mandatory
    assert select_update(cands, req()).is_mandatory


def test_served_update_itself_mandatory() -> None:
    cands = newest_first(upd(1), upd(2, mandatory=True))
    assert select_update(cands, req(current_update_id="u1")).is_mandatory


def test_mandatory_ignores_rolled_back_failed_and_older_than_marker() -> None:
    marker = upd(2, kind="rollback_to_embedded", launch_asset=None)
    assert not select_update(
        newest_first(upd(1, mandatory=True), marker, upd(3)), req()
    ).is_mandatory
    cands = newest_first(upd(1), upd(2, mandatory=True, status="rolled_back"), upd(3))
    assert not select_update(cands, req(current_update_id="u1")).is_mandatory
    cands = newest_first(upd(1), upd(2, mandatory=True), upd(3))
    sel = select_update(cands, req(current_update_id="u1", failed_update_ids=frozenset({"u2"})))
    assert sel.update is not None and sel.update.id == "u3" and not sel.is_mandatory


def test_current_update_rolled_back_still_bounds_mandatory() -> None:
    cands = newest_first(upd(1, mandatory=True), upd(2, status="rolled_back"), upd(3))
    assert not select_update(cands, req(current_update_id="u2")).is_mandatory


@given(
    flags=st.lists(st.booleans(), min_size=1, max_size=8),
    current=st.integers(min_value=0, max_value=8),
)
def test_mandatory_is_any_mandatory_between_current_and_served(
    flags: list[bool], current: int
) -> None:
    updates = [upd(i + 1, mandatory=flag) for i, flag in enumerate(flags)]
    sel = select_update(newest_first(*updates), req(current_update_id=f"u{current}"))
    served = len(flags)
    if current == served:
        assert sel.kind == "no_update"
    elif current > served:  # an id the engine does not know: everything counts
        assert sel.kind == "update" and sel.is_mandatory == any(flags)
    else:  # u0 does not exist either; u1.. are known
        expected = any(flags[current:]) if current >= 1 else any(flags)
        assert sel.kind == "update" and sel.is_mandatory == expected


def reference_select(candidates: list[UpdateRecord], request: SelectionRequest) -> Selection:
    """The rules of the module doc, written as plainly as possible: walks all of history."""
    eligible = [u for u in candidates if is_eligible(u, request)]
    if not eligible:
        return Selection(kind="no_update")
    newest = eligible[0]
    if newest.kind == "rollback_to_embedded":
        on_embedded = (
            request.embedded_update_id is not None
            and request.current_update_id == request.embedded_update_id
        )
        if on_embedded:
            return Selection(kind="no_update")
        return Selection(kind="rollback_to_embedded", update=newest)
    if newest.id == request.current_update_id:
        return Selection(kind="no_update", update=newest)
    current = next((u for u in candidates if u.id == request.current_update_id), None)
    mandatory = False
    for update in candidates[candidates.index(newest) :]:
        if current is not None and update.created_at <= current.created_at:
            break
        if is_eligible(update, request):
            if update.kind == "rollback_to_embedded":
                break
            if update.mandatory:
                mandatory = True
                break
    return Selection(kind="update", update=newest, is_mandatory=mandatory)


candidate_updates = st.lists(
    st.builds(
        lambda minute, mandatory, marker, rolled_back, rollout, runtime: upd(
            minute,
            mandatory=mandatory,
            kind="rollback_to_embedded" if marker else "update",
            status="rolled_back" if rolled_back else "active",
            rollout=rollout,
            runtime_version=runtime,
        ),
        minute=st.integers(min_value=0, max_value=12),  # repeats: equal timestamps
        mandatory=st.booleans(),
        marker=st.sampled_from([False, False, True]),
        rolled_back=st.booleans(),
        rollout=st.sampled_from([0, 30, 100, 100]),
        runtime=st.sampled_from(["1", "1", "2"]),
    ),
    max_size=12,
    unique_by=lambda u: u.id,
)


@settings(max_examples=400)
@given(
    updates=candidate_updates,
    ordered=st.booleans(),
    current=st.integers(min_value=0, max_value=13),
    embedded=st.sampled_from([None, "u5", "emb"]),
    device=st.sampled_from([None, "dev-a", "dev-b"]),
    failed=st.frozensets(st.sampled_from([f"u{n}" for n in range(13)]), max_size=3),
)
def test_indexed_selection_agrees_with_the_plain_rules(
    updates: list[UpdateRecord],
    ordered: bool,
    current: int,
    embedded: str | None,
    device: str | None,
    failed: frozenset[str],
) -> None:
    candidates = newest_first(*updates) if ordered else updates
    request = req(
        current_update_id=f"u{current}" if current < 13 else embedded,
        embedded_update_id=embedded,
        device_id=device,
        failed_update_ids=failed,
    )
    expected = reference_select(candidates, request)
    assert select_update(candidates, request) == expected
    assert select_update(IndexedCandidates(candidates), request) == expected


def test_unordered_candidates_are_walked_in_full() -> None:
    # Not newest first: the walk may not jump to the mandatory updates.
    cands = [upd(5), upd(1), upd(3, mandatory=True), upd(2)]
    assert not select_update(cands, req(current_update_id="u2")).is_mandatory


def test_indexed_candidates_behave_as_their_tuple() -> None:
    updates = newest_first(upd(1), upd(2, mandatory=True), upd(3))
    indexed = IndexedCandidates(updates)
    assert list(indexed) == updates and len(indexed) == 3
    assert indexed[0] == updates[0] and indexed[1:] == tuple(updates[1:])
    assert indexed.position("u2") == 1 and indexed.position("nope") is None
    assert indexed.position(None) is None
