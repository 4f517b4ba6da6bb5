"""Rollout-plan options of ``lumora publish`` and ``lumora updates plan``: parsing the
human forms (``1,10,50,100``, ``1h``, ``2%``) into the API's plan body, and the plan table."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from lumora_ota.cli.errors import CliError
from lumora_ota.cli.output import print_table

if TYPE_CHECKING:
    from lumora_ota.api_models import PlanAnswer

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_steps(raw: str) -> list[int]:
    """``"1,10,50,100"`` -> ``[1, 10, 50, 100]`` (a trailing ``%`` per step is allowed)."""
    try:
        steps = [int(part.strip().rstrip("%")) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise CliError(
            f"--rollout-plan: {raw!r} is not a list of percentages", exit_code=2
        ) from None
    if not steps:
        raise CliError("--rollout-plan: give at least one percentage", exit_code=2)
    return steps


def parse_duration(raw: str) -> int:
    """``"90s"``, ``"30m"``, ``"1h"``, ``"2d"`` or plain seconds -> seconds."""
    match = _DURATION.match(raw.lower())
    if match is None:
        raise CliError(f"--step: {raw!r} is not a duration (e.g. 90s, 30m, 1h, 2d)", exit_code=2)
    return round(float(match.group(1)) * _UNITS[match.group(2)])


def parse_rate(raw: str) -> float:
    """``"2%"`` -> 0.02; ``"0.02"`` -> 0.02."""
    text = raw.strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise CliError(
            f"--max-failure-rate: {raw!r} is not a rate (e.g. 2% or 0.02)", exit_code=2
        ) from None
    if not 0 <= value <= 1:
        raise CliError(f"--max-failure-rate: {raw!r} is not between 0% and 100%", exit_code=2)
    return value


def plan_body(steps: str, step: str, min_launches: int, max_failure_rate: str) -> dict[str, Any]:
    """The body of ``PUT /updates/{id}/rollout-plan``."""
    return {
        "steps": parse_steps(steps),
        "stepSeconds": parse_duration(step),
        "minLaunches": min_launches,
        "maxFailureRate": parse_rate(max_failure_rate),
    }


PLAN_COLUMNS = ["update", "platform", "status", "rollout", "next", "next at", "gate", "reason"]


def print_plans(plans: list[PlanAnswer]) -> None:
    """One row per update's plan: step, next step and time, gate figures, halt reason."""
    rows = []
    for p in plans:
        rate = p.gate.failure_rate
        rows.append(
            [
                p.update_id,
                p.platform,
                p.status,
                f"{p.rollout}% (step {p.step_index + 1}/{len(p.steps)})",
                f"{p.next_step}%" if p.next_step is not None else None,
                (p.next_step_at or "")[:19].replace("T", " ") or None,
                f"{p.gate.failures}/{p.gate.launches} failed"
                + (f" ({rate:.2%})" if rate is not None else "")
                + f", max {p.max_failure_rate:.2%}"
                + f", min {p.min_launches} launches",
                p.halt_reason,
            ]
        )
    print_table(PLAN_COLUMNS, rows)
