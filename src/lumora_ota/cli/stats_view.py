"""How ``lumora updates stats`` shows a ``GET /stats`` report (``StatsReport``) to people.

The report's known parts (totals, daily series, per-update figures, health flags) get
readable tables; the remaining fields (range, filters, thresholds, and any member a newer
server adds) are listed as they are, so newer servers lose nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lumora_ota.cli.output import note, print_fields, print_table

if TYPE_CHECKING:
    from pydantic import BaseModel

    from lumora_ota.api_models import DailyPoint, StatsReport, UpdateFigures

# (attribute, column title) for the per-update table, in display order.
UPDATE_COLUMNS = [
    ("update_id", "update"),
    ("channel", "channel"),
    ("platform", "platform"),
    ("rollout", "rollout"),
    ("checks", "checks"),
    ("downloads", "downl."),
    ("installs", "inst."),
    ("launch_successes", "ok"),
    ("launch_failures", "failed"),
    ("rollbacks", "rb"),
    ("failure_rate", "fail %"),
]
FLAG_COLUMNS = [
    ("update_id", "update"),
    ("channel", "channel"),
    ("platform", "platform"),
    ("launches", "launches"),
    ("failures", "failures"),
    ("failure_rate", "failure rate"),
    ("status", "health"),
]
KNOWN_FIELDS = {"project", "totals", "daily", "updates", "flags"}


def render_stats(report: StatsReport) -> None:
    """Print a stats report as fields and tables."""
    header = [(k, v) for k, v in _members(report).items() if k not in KNOWN_FIELDS]
    if report.project is not None:
        header.insert(0, ("project", report.project.slug or report.project.id))
    print_fields([(k, _text(v)) for k, v in header], title="Statistics")
    print_fields([(k, _text(v)) for k, v in _members(report.totals).items()], title="Totals")
    _print_daily(report.daily)
    _print_rows(report.updates, UPDATE_COLUMNS, "Updates", extra=_health_cell)
    if report.flags:
        _print_rows(report.flags, FLAG_COLUMNS, "Flagged updates (launch failures)")


def _members(model: BaseModel) -> dict[str, Any]:
    """A model's members by their wire names, unknown ones included."""
    return model.model_dump(mode="json", by_alias=True)


def _print_daily(daily: list[DailyPoint]) -> None:
    rows = [_members(d) for d in daily]
    active = [d for d in rows if any(v for k, v in d.items() if k != "date")]
    if not active:
        note(f"no activity in these {len(rows)} days")
        return
    columns = list(dict.fromkeys(k for d in active for k in d))
    print_table(
        columns,
        ([_text(d.get(c)) for c in columns] for d in active),
        title=f"Daily (days with activity, {len(active)} of {len(rows)})",
    )


def _print_rows(
    rows: Sequence[BaseModel],
    columns: list[tuple[str, str]],
    title: str,
    *,
    extra: Callable[[Any], str] | None = None,
) -> None:
    if not rows:
        return
    titles = [t for _, t in columns] + (["health"] if extra else [])
    print_table(
        titles,
        (
            [_text(getattr(r, field)) for field, _ in columns] + ([extra(r)] if extra else [])
            for r in rows
        ),
        title=title,
    )


def _health_cell(row: UpdateFigures) -> str:
    return row.health.status


def _text(value: Any) -> Any:
    """Nested values as compact text; rates as percentages."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_text(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return json.dumps(value, separators=(",", ":")) if value else "-"
    if isinstance(value, float):
        return f"{value:.1%}" if 0 <= value <= 1 else f"{value:g}"
    return value
