"""Management API: ``GET /stats`` — totals, daily series, per-update figures, health flags.

Figures are defined in ``lumora_ota.stats`` (device outcomes count devices, not reports) and
read by ``lumora_ota.stats_report``. They trail live traffic by at most one flush interval.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from lumora_ota.api_models import StatsReport
from lumora_ota.server.context import app_context
from lumora_ota.server.management.auth import CurrentPrincipal, ReadSession, visible_project
from lumora_ota.server.problems import ProblemError, not_found
from lumora_ota.stats_report import StatsQuery, build_report, health_thresholds
from lumora_ota.store.models import Update, utcnow

router = APIRouter(tags=["stats"])


DEFAULT_RANGE_DAYS = 30
MAX_RANGE_DAYS = 400


def parse_day(value: str | None, name: str) -> date | None:
    """A day from ``YYYY-MM-DD`` or an ISO 8601 time (its UTC date); 422 when malformed."""
    if value is None or value == "":
        return None
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        raise ProblemError(
            422,
            f"{name}: expected a date (YYYY-MM-DD) or an ISO 8601 time",
            title="Invalid request",
        ) from None


def day_range(since: str | None, until: str | None, today: date) -> tuple[date, date]:
    """The inclusive day range, defaulting to the last 30 days; 422 when it makes no sense."""
    last = parse_day(until, "until") or today
    first = parse_day(since, "since") or last - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if first > last:
        raise ProblemError(422, "since is after until", title="Invalid request")
    if (last - first).days + 1 > MAX_RANGE_DAYS:
        raise ProblemError(
            422, f"the range spans more than {MAX_RANGE_DAYS} days", title="Invalid request"
        )
    return first, last


@router.get(
    "/stats",
    response_model=StatsReport,
    summary="Statistics: totals, daily series, per-update figures and health flags",
    description=(
        "Figures over the day range `since`..`until` (inclusive, UTC days; default the last "
        "30 days): `checks` (requests answered), `downloads`, `installs`, `launchSuccesses`, "
        "`launchFailures`, `rollbacks`, `downloadFailures` (each counts devices per update, "
        "however often a device reports it), `uniqueDevices` (devices that checked in), "
        "`activeDevices` (devices seen within 1/7/30 days before now; with `update`: whose "
        "latest check reported that update as running), `successRate` and `failureRate` "
        "(over launches). `updates` lists per-update figures with a health verdict; `flags` "
        "lists updates whose launch-failure rate crosses the threshold. `project` is required "
        "unless the key is scoped to all projects (then every project is summed)."
    ),
)
def get_stats(
    request: Request,
    principal: CurrentPrincipal,
    session: ReadSession,
    project: Annotated[str | None, Query(description="Project id or slug")] = None,
    channel: Annotated[str | None, Query(max_length=100)] = None,
    update: Annotated[str | None, Query(max_length=64, description="Update id")] = None,
    since: Annotated[str | None, Query(description="First day (YYYY-MM-DD)")] = None,
    until: Annotated[str | None, Query(description="Last day (YYYY-MM-DD)")] = None,
) -> dict[str, Any]:
    """Statistics visible to the key."""
    project_ids: list[str] | None
    project_ref: dict[str, Any] | None = None
    if project:
        found = visible_project(session, principal, project)
        project_ids = [found.id]
        project_ref = {"id": found.id, "slug": found.slug, "name": found.name}
    elif principal.project_id is not None:
        project_ids = [principal.project_id]
    else:
        project_ids = None
    if update:
        upd = session.get(Update, update)
        if (
            upd is None
            or not principal.can_see(upd.project_id)
            or (project_ids is not None and upd.project_id not in project_ids)
        ):
            raise not_found(f"update {update!r}")
    first, last = day_range(since, until, utcnow().date())
    settings = app_context(request).settings
    report = build_report(
        session,
        StatsQuery(
            project_ids=project_ids, since=first, until=last, channel=channel, update_id=update
        ),
        thresholds=health_thresholds(settings),
    )
    return {"project": project_ref, **report}
