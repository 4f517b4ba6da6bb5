"""The runtime-range index (performance issue 21, target 4): a device's runtime version is
matched against a channel's declared ranges by a binary search, never one range at a time,
and the answers are those of matching every range one by one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import semantic_version
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lumora_ota.domain.model import UpdateRecord
from lumora_ota.domain.runtime import is_runtime_range, runtime_matches
from lumora_ota.domain.runtime_ranges import RangeIndex
from lumora_ota.server.device.cache import RuntimeIndex

NUMBER = st.integers(0, 4).map(str)
PRE = st.sampled_from(["", "-alpha", "-beta.1", "-rc.2", "-0", "-a.x"])
BUILD = st.sampled_from(["", "", "+b1", "+build.7"])


@st.composite
def versions(draw: st.DrawFn) -> str:
    """Device versions: short, full, with pre-release and build parts, or not semver."""
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return ".".join(draw(st.lists(NUMBER, min_size=1, max_size=3)))
    if kind == 5:
        return draw(st.sampled_from(["abc", "1.x", "^1.0.0", "exposdk:47.0.0", "", "1.0.0-a.x"]))
    core = ".".join(draw(st.lists(NUMBER, min_size=3, max_size=3)))
    return core + draw(PRE) + draw(BUILD)


@st.composite
def comparators(draw: st.DrawFn) -> str:
    op = draw(st.sampled_from(["", "=", "^", "~", ">", ">=", "<", "<="]))
    parts = draw(st.lists(st.one_of(NUMBER, st.just("x")), min_size=1, max_size=3))
    wildcard = "x" in parts
    if wildcard:
        parts = parts[: parts.index("x") + 1]
        if parts[0] == "x":
            op = draw(st.sampled_from(["", ">="]))
    text = op + ".".join(parts)
    if len(parts) == 3 and not wildcard:
        text += draw(PRE)
        if op in ("", "="):
            text += draw(BUILD)
    return text


@st.composite
def ranges(draw: st.DrawFn) -> str:
    """npm ranges: comparator sets, hyphen ranges, alternatives."""
    groups = []
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            low = draw(versions().filter(lambda v: v.count(".") == 2 and "+" not in v))
            high = draw(versions().filter(lambda v: v.count(".") == 2 and "+" not in v))
            groups.append(f"{low} - {high}")
        else:
            groups.append(" ".join(draw(st.lists(comparators(), min_size=1, max_size=3))))
    return " || ".join(groups)


DECLARED = st.lists(ranges().filter(is_runtime_range), min_size=1, max_size=25, unique=True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DECLARED, st.lists(versions(), min_size=1, max_size=20))
def test_range_index_answers_what_matching_each_range_answers(
    declared: list[str], requested: list[str]
) -> None:
    """Any ranges, any device strings (release, pre-release, build, garbage), asked in any
    order (so cells are remembered between questions): the same ranges as one by one."""
    index = RangeIndex(declared, lambda indices: indices)
    for version in requested:
        expected = tuple(
            i for i, d in enumerate(declared) if d != version and runtime_matches(d, version)
        )
        assert index.lookup(version) == expected, (declared, version)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(ranges().filter(is_runtime_range), versions()), min_size=1, max_size=30),
    st.lists(versions(), min_size=1, max_size=10),
)
def test_runtime_index_with_ranges_finds_what_a_full_scan_finds(
    declared: list[str], requested: list[str]
) -> None:
    """A history mixing exact versions and ranges: the indexed positions are the updates a
    scan of the whole history matches, newest first."""
    history = tuple(
        UpdateRecord(
            id=f"u{i}",
            group_id="g",
            project_id="p",
            channel="production",
            platform="ios",
            runtime_version=version,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        for i, version in enumerate(declared)
    )
    index = RuntimeIndex(history)
    for version in requested:
        expected = [i for i, u in enumerate(history) if runtime_matches(u.runtime_version, version)]
        assert list(index.positions(version)) == expected, (declared, version)


def history_of(declared: list[str]) -> tuple[UpdateRecord, ...]:
    return tuple(
        UpdateRecord(
            id=f"u{i}",
            group_id="g",
            project_id="p",
            channel="production",
            platform="ios",
            runtime_version=version,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        for i, version in enumerate(declared)
    )


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(versions(), min_size=1, max_size=100))
def test_unknown_versions_cost_no_range_matching_once_their_cell_is_known(
    monkeypatch: pytest.MonkeyPatch, requested: list[str]
) -> None:
    """2,000 distinct range declarations: once the index is built (a few matches per range),
    a device version no update declares is answered without matching any range (a binary
    search, then the remembered cell); a string that is no semantic version never matches a
    range. Before, each lookup matched all 2,000."""
    declared = [f">={i // 100}.{i % 100}.0 <{i // 100}.{i % 100}.5" for i in range(2000)]
    index = RuntimeIndex(history_of(declared))
    release = [v for v in requested if "-" not in v and "+" not in v]
    expected = {v: [i for i, d in enumerate(declared) if runtime_matches(d, v)] for v in release}
    calls = 0
    original = semantic_version.NpmSpec.match

    def counting(self: semantic_version.NpmSpec, version: semantic_version.Version) -> bool:
        nonlocal calls
        calls += 1
        return bool(original(self, version))

    monkeypatch.setattr(semantic_version.NpmSpec, "match", counting)
    for version in release:  # pre-release and build versions match against a few ranges
        assert list(index.positions(version)) == expected[version]
    assert calls == 0


@given(st.lists(versions(), max_size=60))
def test_remembered_cell_answers_stay_bounded(requested: list[str]) -> None:
    """However many distinct versions devices send, an index remembers at most
    ``MAX_CELL_ANSWERS`` cell answers (here 3), and its answers stay right past the bound."""
    import lumora_ota.domain.runtime_ranges as ranges_module

    declared = [f">={i}.0.0 <{i}.5.0" for i in range(5)] + ["^1.2.3-beta.1", "1.x || 3.1.x"]
    original = ranges_module.MAX_CELL_ANSWERS
    ranges_module.MAX_CELL_ANSWERS = 3
    try:
        index = RangeIndex(declared, lambda indices: indices)
        for version in requested:
            expected = tuple(i for i, d in enumerate(declared) if runtime_matches(d, version))
            assert index.lookup(version) == expected
            assert len(index._cells) <= 3
    finally:
        ranges_module.MAX_CELL_ANSWERS = original
