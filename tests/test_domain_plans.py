"""The pure rollout-plan rule (``lumora_ota.domain.plans``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lumora_ota.domain.plans import Action, Plan, PlanError, decide

PLAN = Plan(steps=(1, 10, 50, 100), step_seconds=3600, min_launches=50, max_failure_rate=0.02)


def test_waits_while_soaking() -> None:
    d = decide(PLAN, 0, 10, 100, 0)
    assert d.action is Action.WAIT and d.seconds_left == pytest.approx(3590)


def test_advances_when_soaked_and_gate_holds() -> None:
    assert decide(PLAN, 1, 3600, 50, 1) == decide(PLAN, 1, 9999, 50, 1)
    assert decide(PLAN, 1, 3600, 50, 1).action is Action.ADVANCE
    assert decide(PLAN, 1, 3600, 50, 1).step_index == 2


def test_waits_for_launches_after_the_soak() -> None:
    d = decide(PLAN, 0, 7200, 49, 0)
    assert d.action is Action.WAIT and "49 of 50" in d.reason


def test_halts_when_the_failure_rate_crosses_the_maximum_even_while_soaking() -> None:
    d = decide(PLAN, 1, 5, 100, 3)
    assert d.action is Action.HALT and "3.00%" in d.reason


def test_too_few_launches_do_not_halt() -> None:
    assert decide(PLAN, 1, 5, 10, 5).action is Action.WAIT


def test_time_alone_with_no_minimum() -> None:
    plan = Plan(steps=(1, 100), step_seconds=2, min_launches=0, max_failure_rate=0.02)
    assert decide(plan, 0, 2, 0, 0).action is Action.ADVANCE
    assert decide(plan, 0, 1, 1, 1).action is Action.HALT  # one failing device of one


def test_last_step_completes() -> None:
    assert decide(PLAN, 3, 0, 0, 0).action is Action.COMPLETE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": ()},
        {"steps": (10, 5)},
        {"steps": (0, 100)},
        {"steps": (1, 101)},
        {"steps": (10, 10)},
        {"step_seconds": -1},
        {"max_failure_rate": 1.5},
        {"min_launches": -1},
    ],
)
def test_bad_plans_are_refused(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"steps": (1, 100), "step_seconds": 1, **kwargs}
    with pytest.raises(PlanError):
        Plan(**args)  # type: ignore[arg-type]


steps_st = st.lists(st.integers(1, 100), min_size=1, max_size=8, unique=True).map(
    lambda s: tuple(sorted(s))
)


@given(
    steps=steps_st,
    step_seconds=st.integers(0, 10_000),
    min_launches=st.integers(0, 1000),
    max_rate=st.floats(0, 1),
    data=st.data(),
)
def test_decision_properties(
    steps: tuple[int, ...],
    step_seconds: int,
    min_launches: int,
    max_rate: float,
    data: st.DataObject,
) -> None:
    plan = Plan(steps, step_seconds, min_launches, max_rate)
    index = data.draw(st.integers(0, len(steps) - 1))
    elapsed = data.draw(st.floats(0, 20_000))
    launches = data.draw(st.integers(0, 5000))
    failures = data.draw(st.integers(0, launches))
    d = decide(plan, index, elapsed, launches, failures)
    rate = failures / launches if launches else 0.0
    if d.action is Action.ADVANCE:
        # Only one step at a time, only after the soak, only through a holding gate.
        assert d.step_index == index + 1 < len(steps)
        assert elapsed >= step_seconds and launches >= min_launches and rate <= max_rate
    elif d.action is Action.HALT:
        assert launches >= max(min_launches, 1) and rate > max_rate
    elif d.action is Action.COMPLETE:
        assert index == len(steps) - 1
    else:
        assert d.step_index == index
    # A failure rate above the maximum over enough launches always halts.
    if launches >= max(min_launches, 1) and rate > max_rate:
        assert d.action is Action.HALT


def test_a_halt_needs_min_failures_and_too_few_failures_only_wait() -> None:
    """The server passes LUMORA_HEALTH_MIN_FAILURES: the few failing devices one address
    may add neither halt a plan nor let it advance past a failure rate above the maximum."""
    plan = Plan(steps=(1, 50, 100), step_seconds=0, max_failure_rate=0.02)
    assert decide(plan, 0, 10, 3, 3, min_failures=10).action is Action.WAIT
    assert "needed to halt" in decide(plan, 0, 10, 3, 3, min_failures=10).reason
    assert decide(plan, 0, 10, 30, 10, min_failures=10).action is Action.HALT
    assert decide(plan, 0, 10, 1000, 3, min_failures=10).action is Action.ADVANCE
