"""Rollout plans: the pure rule that moves a rollout through its steps or halts it.

A plan is a list of rollout percentages (``steps``, rising, the last one usually 100), a soak
time per step and a gate. ``decide`` says what to do now, given the step the plan is at, the
seconds spent there and the launch figures of the update (devices the update was served to,
as the health figure counts them: ``stats_report.health_counts``):

* **halt** when at least ``max(min_launches, 1)`` devices launched it, at least
  ``min_failures`` of them failed (the server passes ``LUMORA_HEALTH_MIN_FAILURES``, so that
  the few devices one client address may add cannot halt a plan: SECURITY.md section 11) and
  the share that failed exceeds ``max_failure_rate`` (checked first, at every step, soak or
  not);
* **advance** to the next step when the soak time has passed and the gate holds: at least
  ``min_launches`` launches (``0``: time alone) and a failure rate at most the maximum (a
  rate above it with too few failures to halt waits);
* **complete** once the last step is reached;
* otherwise **wait**, with the seconds left when only time is missing.

The same shape as hawkBit's rollout groups (success and error thresholds per group).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MAX_STEPS = 20
MAX_STEP_SECONDS = 30 * 24 * 3600


class PlanError(ValueError):
    """A plan that cannot be run (steps not rising, out of range, ...)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A rollout plan: ``steps`` percentages (1..100, strictly rising), ``step_seconds`` of
    soak per step, the gate's ``min_launches`` and ``max_failure_rate`` (0..1)."""

    steps: tuple[int, ...]
    step_seconds: int
    min_launches: int = 0
    max_failure_rate: float = 0.05

    def __post_init__(self) -> None:
        if not self.steps or len(self.steps) > MAX_STEPS:
            raise PlanError(f"a plan has 1 to {MAX_STEPS} steps")
        if any(not 1 <= s <= 100 for s in self.steps):
            raise PlanError("steps are percentages from 1 to 100")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise PlanError("steps must rise strictly")
        if not 0 <= self.step_seconds <= MAX_STEP_SECONDS:
            raise PlanError(f"stepSeconds must be between 0 and {MAX_STEP_SECONDS}")
        if self.min_launches < 0:
            raise PlanError("minLaunches must not be negative")
        if not 0 <= self.max_failure_rate <= 1:
            raise PlanError("maxFailureRate must be between 0 and 1")


class Action(StrEnum):
    """What ``decide`` tells the runner to do."""

    WAIT = "wait"
    ADVANCE = "advance"
    HALT = "halt"
    COMPLETE = "complete"


@dataclass(frozen=True, slots=True)
class Decision:
    """``action``; for ADVANCE the new ``step_index``; ``reason`` for a halt or a wait."""

    action: Action
    step_index: int
    reason: str = ""
    # Seconds until the soak time of the current step is over (0 when it is).
    seconds_left: float = 0.0


def failure_rate(launches: int, failures: int) -> float | None:
    """``failures / launches``, None without launches."""
    return failures / launches if launches > 0 else None


def decide(
    plan: Plan,
    step_index: int,
    elapsed_seconds: float,
    launches: int,
    failures: int,
    *,
    min_failures: int = 1,
) -> Decision:
    """What to do for a plan at ``step_index`` whose step began ``elapsed_seconds`` ago, with
    ``launches`` devices that launched the update (successfully or not), ``failures`` of
    which failed; a halt needs at least ``min_failures`` failing devices. Raises
    ``PlanError`` for a step index outside the plan."""
    if not 0 <= step_index < len(plan.steps):
        raise PlanError(f"step {step_index} is not in a plan of {len(plan.steps)} steps")
    rate = failure_rate(launches, failures)
    enough = launches >= max(plan.min_launches, 1) and failures >= max(min_failures, 1)
    failing = rate is not None and rate > plan.max_failure_rate
    if failing and enough:
        return Decision(
            Action.HALT,
            step_index,
            reason=(
                f"launch failure rate {rate:.2%} ({failures} of {launches} devices) "
                f"above the maximum {plan.max_failure_rate:.2%}"
            ),
        )
    if step_index == len(plan.steps) - 1:
        return Decision(Action.COMPLETE, step_index)
    left = max(plan.step_seconds - elapsed_seconds, 0.0)
    if left > 0:
        return Decision(Action.WAIT, step_index, reason="soaking", seconds_left=left)
    if launches < plan.min_launches:
        return Decision(
            Action.WAIT,
            step_index,
            reason=f"{launches} of {plan.min_launches} launches needed",
        )
    if failing:
        return Decision(
            Action.WAIT,
            step_index,
            reason=f"failure rate above the maximum, {failures} of {min_failures} failures"
            " needed to halt",
        )
    return Decision(Action.ADVANCE, step_index + 1)
