"""The C allocator settings of server processes (issue 21, target 3): arenas capped before
workers start, free heap pages trimmed after statistics flushes at a bounded rate."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lumora_ota.server import allocator


def test_the_operators_arena_cap_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    applied = allocator.limit_arenas()
    assert applied in (4, None)  # None: not glibc, nothing to cap
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    applied = allocator.limit_arenas()
    assert applied in (allocator.ARENA_MAX, None)
    # Exported, so workers started (not forked) by the server get the same cap.
    assert os.environ["MALLOC_ARENA_MAX"] == str(allocator.ARENA_MAX)


@given(st.lists(st.floats(0, 30), max_size=40))
def test_trims_at_most_once_per_interval(gaps: list[float]) -> None:
    """Flushes at any pace: ``malloc_trim`` runs at most once per interval, and at the first
    flush after each interval has passed."""
    now = [1000.0]
    calls: list[float] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(allocator.time, "monotonic", lambda: now[0])
        mp.setattr(allocator, "trim", lambda: calls.append(now[0]) or True)
        hook = allocator.PeriodicTrim(interval=10.0)
        hook(None)
        for gap in gaps:
            now[0] += gap
            hook(None)
    assert calls[0] == 1000.0
    assert all(b - a >= 10.0 for a, b in itertools.pairwise(calls))
    assert now[0] - calls[-1] < 10.0  # no flush went untrimmed a whole interval after one
    assert hook.trims == len(calls)


def test_trim_runs_here() -> None:
    """On glibc the real call works (returns whether memory was released)."""
    assert allocator.trim() in (True, False)
