"""How ``lumora updates stats`` shows a ``GET /stats`` report to people.

The report's known parts (totals, daily series, per-update figures, health flags) get
readable tables; any other field is still shown, so newer servers lose nothing.
"""

from __future__ import annotations

import json
from typing import Any

from lumora_ota.cli.output import note, print_fields, print_table

# (report field, column title) for the per-update table, in display order.
UPDATE_COLUMNS = [
    ("updateId", "update"),
    ("channel", "channel"),
    ("platform", "platform"),
    ("rollout", "rollout"),
    ("checks", "checks"),
    ("downloads", "downl."),
    ("installs", "inst."),
    ("launchSuccesses", "ok"),
    ("launchFailures", "failed"),
    ("rollbacks", "rb"),
    ("failureRate", "fail %"),
]
FLAG_COLUMNS = [
    ("updateId", "update"),
    ("channel", "channel"),
    ("platform", "platform"),
    ("launches", "launches"),
    ("failures", "failures"),
    ("failureRate", "failure rate"),
    ("status", "health"),
]
KNOWN_FIELDS = {"project", "totals", "daily", "updates", "flags"}


def render_stats(report: Any) -> None:
    """Print a stats report as fields and tables."""
    if not isinstance(report, dict):
        print_fields([("stats", json.dumps(report))])
        return
    project = report.get("project")
    header = [(k, v) for k, v in report.items() if k not in KNOWN_FIELDS]
    if isinstance(project, dict):
        header.insert(0, ("project", project.get("slug") or project.get("id")))
    print_fields([(k, _text(v)) for k, v in header], title="Statistics")
    totals = report.get("totals")
    if isinstance(totals, dict):
        print_fields([(k, _text(v)) for k, v in totals.items()], title="Totals")
    _print_daily(report.get("daily"))
    _print_rows(report.get("updates"), UPDATE_COLUMNS, "Updates", extra=_health_cell)
    flags = report.get("flags")
    if isinstance(flags, list) and flags:
        _print_rows(flags, FLAG_COLUMNS, "Flagged updates (launch failures)")


def _print_daily(daily: Any) -> None:
    if not isinstance(daily, list):
        return
    rows = [d for d in daily if isinstance(d, dict)]
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
    rows: Any,
    columns: list[tuple[str, str]],
    title: str,
    *,
    extra: Any = None,
) -> None:
    if not isinstance(rows, list) or not rows:
        return
    items = [r for r in rows if isinstance(r, dict)]
    titles = [t for _, t in columns] + (["health"] if extra else [])
    print_table(
        titles,
        (
            [_text(r.get(field)) for field, _ in columns] + ([extra(r)] if extra else [])
            for r in items
        ),
        title=title,
    )


def _health_cell(row: dict[str, Any]) -> str:
    health = row.get("health")
    return str(health.get("status", "-")) if isinstance(health, dict) else "-"


def _text(value: Any) -> Any:
    """Nested values as compact text; rates as percentages."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_text(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return json.dumps(value, separators=(",", ":")) if value else "-"
    if isinstance(value, float):
        return f"{value:.1%}" if 0 <= value <= 1 else f"{value:g}"
    return value
