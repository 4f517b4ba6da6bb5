"""Statistics figures read back from the database, and the update health signal.

``build_report`` answers ``GET /api/v1/stats``: totals, a daily series and per-update figures
for a set of projects, optionally narrowed to a channel, an update and a day range. Figures
are defined in ``lumora_ota.stats``; device outcomes count devices, never raw reports.

``evaluate_health`` is the pure health rule: an update is flagged when at least
``min_launches`` devices launched it (successfully or not) and the share that failed exceeds
``failure_rate``. ``auto_pause_failing`` applies it after each flush and, for projects with
``auto_pause_on_failure``, sets a failing update's rollout to 0 (audited, delivery revision
bumped) exactly once even when several processes notice at the same time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select, update
from sqlalchemy.orm import Session

from lumora_ota.store.db import bump_delivery_revision
from lumora_ota.store.models import (
    AuditEntry,
    Channel,
    DeviceDay,
    DeviceState,
    DeviceUpdateFact,
    Project,
    StatCounter,
    Update,
    utcnow,
)

ACTIVE_WINDOWS: tuple[int, ...] = (1, 7, 30)
# API names of the device facts (see lumora_ota.stats.FACTS).
FACT_FIGURES: dict[str, str] = {
    "download": "downloads",
    "install": "installs",
    "launch_success": "launchSuccesses",
    "launch_failure": "launchFailures",
    "rollback": "rollbacks",
    "download_failure": "downloadFailures",
}
SERIES_FIGURES: tuple[str, ...] = ("checks", "uniqueDevices", *FACT_FIGURES.values())
MAX_UPDATES_IN_REPORT = 100
AUTO_PAUSE_ACTION = "update.autoPause"


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    """When an update counts as failing."""

    failure_rate: float = 0.05
    min_launches: int = 20


@dataclass(frozen=True, slots=True)
class Health:
    """An update's launch health."""

    launches: int
    failures: int
    failure_rate: float | None
    flagged: bool

    @property
    def status(self) -> str:
        """``failing``, ``ok`` or ``insufficientData``."""
        if self.flagged:
            return "failing"
        return "ok" if self.failure_rate is not None else "insufficientData"


def rate(part: int, whole: int) -> float | None:
    """``part / whole`` rounded to 4 places, None when there is nothing to divide."""
    return round(part / whole, 4) if whole else None


def evaluate_health(successes: int, failures: int, thresholds: HealthThresholds) -> Health:
    """The health rule: flagged when launches >= min and the failure share exceeds the rate."""
    launches = successes + failures
    failure_rate = rate(failures, launches)
    flagged = (
        launches >= thresholds.min_launches
        and launches > 0
        and failures / launches > thresholds.failure_rate
    )
    enough = launches >= thresholds.min_launches
    return Health(launches, failures, failure_rate if enough else None, flagged)


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """What to report on. ``project_ids`` None means every project."""

    project_ids: Sequence[str] | None
    since: date
    until: date
    channel: str | None = None
    update_id: str | None = None


def _days(since: date, until: date) -> list[date]:
    return [since + timedelta(days=i) for i in range((until - since).days + 1)]


def _in_projects(column: Any, query: StatsQuery) -> Any:
    return column.in_(query.project_ids) if query.project_ids is not None else column.isnot(None)


def _fact_query(query: StatsQuery, *columns: Any) -> Any:
    """SELECT over facts of real updates of the projects, narrowed by the query."""
    stmt = (
        select(*columns)
        .select_from(DeviceUpdateFact)
        .join(
            Update,
            and_(
                Update.id == DeviceUpdateFact.update_id,
                Update.project_id == DeviceUpdateFact.project_id,
            ),
        )
        .where(_in_projects(DeviceUpdateFact.project_id, query))
    )
    if query.update_id:
        stmt = stmt.where(DeviceUpdateFact.update_id == query.update_id)
    if query.channel:
        stmt = stmt.join(Channel, Channel.id == Update.channel_id).where(
            Channel.name == query.channel
        )
    return stmt


def _in_range(column: Any, query: StatsQuery) -> Any:
    return and_(column >= query.since, column <= query.until)


def _counter_rows(session: Session, query: StatsQuery) -> dict[date, int]:
    stmt = (
        select(StatCounter.day, func.sum(StatCounter.value))
        .where(_in_projects(StatCounter.project_id, query))
        .where(StatCounter.project_id != "")
        .where(StatCounter.metric == "checks")
        .where(_in_range(StatCounter.day, query))
        .group_by(StatCounter.day)
    )
    if query.channel:
        stmt = stmt.where(StatCounter.channel == query.channel)
    if query.update_id:
        stmt = stmt.where(StatCounter.update_id == query.update_id)
    return {_as_date(day): int(n or 0) for day, n in session.execute(stmt)}


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def _unique_devices(session: Session, query: StatsQuery) -> tuple[int, dict[date, int]]:
    """Distinct devices over the range and per day."""
    if query.update_id:
        base = _fact_query(query, DeviceUpdateFact.day, DeviceUpdateFact.device_id).where(
            _in_range(DeviceUpdateFact.day, query)
        )
        sub = base.subquery()
        day_col, dev_col = sub.c.day, sub.c.device_id
    else:
        dstmt = (
            select(DeviceDay.day, DeviceDay.device_id)
            .where(_in_projects(DeviceDay.project_id, query))
            .where(_in_range(DeviceDay.day, query))
        )
        if query.channel:
            dstmt = dstmt.where(DeviceDay.channel == query.channel)
        sub = dstmt.subquery()
        day_col, dev_col = sub.c.day, sub.c.device_id
    total = session.execute(select(func.count(func.distinct(dev_col)))).scalar() or 0
    per_day = {
        _as_date(day): int(n)
        for day, n in session.execute(
            select(day_col, func.count(func.distinct(dev_col))).group_by(day_col)
        )
    }
    return int(total), per_day


def _active_devices(session: Session, query: StatsQuery, now: datetime) -> dict[str, int]:
    """Devices seen within 1/7/30 days (whose latest check reported the update, if given)."""
    columns = [
        func.sum(case((DeviceState.last_seen >= now - timedelta(days=n), 1), else_=0))
        for n in ACTIVE_WINDOWS
    ]
    stmt = select(*columns).where(_in_projects(DeviceState.project_id, query))
    stmt = stmt.where(DeviceState.last_seen >= now - timedelta(days=max(ACTIVE_WINDOWS)))
    if query.channel:
        stmt = stmt.where(DeviceState.channel == query.channel)
    if query.update_id:
        stmt = stmt.where(DeviceState.current_update_id == query.update_id)
    row = session.execute(stmt).one()
    return {f"{n}d": int(v or 0) for n, v in zip(ACTIVE_WINDOWS, row, strict=True)}


def _rates(figures: dict[str, Any]) -> None:
    ok, failed = figures["launchSuccesses"], figures["launchFailures"]
    figures["successRate"] = rate(ok, ok + failed)
    figures["failureRate"] = rate(failed, ok + failed)


def _per_update(
    session: Session, query: StatsQuery, now: datetime, thresholds: HealthThresholds
) -> list[dict[str, Any]]:
    in_range = {
        (uid, fact): int(n)
        for uid, fact, n in session.execute(
            _fact_query(query, DeviceUpdateFact.update_id, DeviceUpdateFact.fact, func.count())
            .where(_in_range(DeviceUpdateFact.day, query))
            .group_by(DeviceUpdateFact.update_id, DeviceUpdateFact.fact)
        )
    }
    all_time = {
        (uid, fact): int(n)
        for uid, fact, n in session.execute(
            _fact_query(query, DeviceUpdateFact.update_id, DeviceUpdateFact.fact, func.count())
            .where(DeviceUpdateFact.fact.in_(("launch_success", "launch_failure")))
            .group_by(DeviceUpdateFact.update_id, DeviceUpdateFact.fact)
        )
    }
    checks_stmt = (
        select(StatCounter.update_id, func.sum(StatCounter.value))
        .where(_in_projects(StatCounter.project_id, query))
        .where(StatCounter.metric == "checks", StatCounter.update_id != "")
        .where(_in_range(StatCounter.day, query))
        .group_by(StatCounter.update_id)
    )
    if query.channel:
        checks_stmt = checks_stmt.where(StatCounter.channel == query.channel)
    if query.update_id:
        checks_stmt = checks_stmt.where(StatCounter.update_id == query.update_id)
    checks = {uid: int(n or 0) for uid, n in session.execute(checks_stmt)}
    active_cols = [
        func.sum(case((DeviceState.last_seen >= now - timedelta(days=n), 1), else_=0))
        for n in ACTIVE_WINDOWS
    ]
    active_stmt = (
        select(DeviceState.current_update_id, *active_cols)
        .where(_in_projects(DeviceState.project_id, query))
        .where(DeviceState.current_update_id.isnot(None))
        .where(DeviceState.last_seen >= now - timedelta(days=max(ACTIVE_WINDOWS)))
        .group_by(DeviceState.current_update_id)
    )
    if query.update_id:
        active_stmt = active_stmt.where(DeviceState.current_update_id == query.update_id)
    active = {
        row[0]: {f"{n}d": int(v or 0) for n, v in zip(ACTIVE_WINDOWS, row[1:], strict=True)}
        for row in session.execute(active_stmt)
    }
    ids = {uid for uid, _ in in_range} | {uid for uid, _ in all_time} | set(checks) | set(active)
    if not ids:
        return []
    ustmt = (
        select(Update, Channel.name)
        .join(Channel, Channel.id == Update.channel_id)
        .where(Update.id.in_(ids))
        .where(_in_projects(Update.project_id, query))
        .order_by(Update.created_at.desc(), Update.id)
        .limit(MAX_UPDATES_IN_REPORT)
    )
    if query.channel:
        ustmt = ustmt.where(Channel.name == query.channel)
    rows: list[dict[str, Any]] = []
    for upd, channel_name in session.execute(ustmt):
        figures: dict[str, Any] = {
            "updateId": upd.id,
            "projectId": upd.project_id,
            "channel": channel_name,
            "platform": upd.platform,
            "runtimeVersion": upd.runtime_version,
            "message": upd.message,
            "createdAt": format_time(upd.created_at),
            "rollout": upd.rollout,
            "status": "rolledBack" if upd.status == "rolled_back" else upd.status,
            "checks": checks.get(upd.id, 0),
        }
        for fact, name in FACT_FIGURES.items():
            figures[name] = in_range.get((upd.id, fact), 0)
        figures["activeDevices"] = active.get(upd.id, {f"{n}d": 0 for n in ACTIVE_WINDOWS})
        _rates(figures)
        health = evaluate_health(
            all_time.get((upd.id, "launch_success"), 0),
            all_time.get((upd.id, "launch_failure"), 0),
            thresholds,
        )
        figures["health"] = health_json(health)
        rows.append(figures)
    return rows


def health_json(health: Health) -> dict[str, Any]:
    """The API shape of a ``Health``."""
    return {
        "status": health.status,
        "flagged": health.flagged,
        "launches": health.launches,
        "failures": health.failures,
        "failureRate": health.failure_rate,
    }


def format_time(value: datetime) -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def build_report(
    session: Session,
    query: StatsQuery,
    *,
    thresholds: HealthThresholds,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Totals, daily series, per-update figures and health flags for ``query``."""
    now = now or utcnow()
    days = _days(query.since, query.until)
    checks = _counter_rows(session, query)
    facts: dict[tuple[date, str], int] = {}
    for day, fact, n in session.execute(
        _fact_query(query, DeviceUpdateFact.day, DeviceUpdateFact.fact, func.count())
        .where(_in_range(DeviceUpdateFact.day, query))
        .group_by(DeviceUpdateFact.day, DeviceUpdateFact.fact)
    ):
        facts[(_as_date(day), fact)] = int(n)
    unique_total, unique_daily = _unique_devices(session, query)

    daily: list[dict[str, Any]] = []
    for day in days:
        point: dict[str, Any] = {
            "date": day.isoformat(),
            "checks": checks.get(day, 0),
            "uniqueDevices": unique_daily.get(day, 0),
        }
        for fact, name in FACT_FIGURES.items():
            point[name] = facts.get((day, fact), 0)
        daily.append(point)

    totals: dict[str, Any] = {
        name: sum(p[name] for p in daily) for name in SERIES_FIGURES if name != "uniqueDevices"
    }
    totals["uniqueDevices"] = unique_total
    totals["activeDevices"] = _active_devices(session, query, now)
    _rates(totals)
    updates = _per_update(session, query, now, thresholds)
    flags = [
        {
            "updateId": u["updateId"],
            "projectId": u["projectId"],
            "channel": u["channel"],
            "platform": u["platform"],
            "rollout": u["rollout"],
            **u["health"],
        }
        for u in updates
        if u["health"]["flagged"]
    ]
    return {
        "since": query.since.isoformat(),
        "until": query.until.isoformat(),
        "channel": query.channel,
        "update": query.update_id,
        "totals": totals,
        "daily": daily,
        "updates": updates,
        "flags": flags,
        "thresholds": {
            "failureRate": thresholds.failure_rate,
            "minLaunches": thresholds.min_launches,
        },
    }


# ---------------------------------------------------------------------- auto-pause


def launch_counts(session: Session, project_id: str, update_id: str) -> tuple[int, int]:
    """All-time (successes, failures) device counts of one update."""
    rows = dict(
        session.execute(
            select(DeviceUpdateFact.fact, func.count())
            .where(
                DeviceUpdateFact.project_id == project_id,
                DeviceUpdateFact.update_id == update_id,
                DeviceUpdateFact.fact.in_(("launch_success", "launch_failure")),
            )
            .group_by(DeviceUpdateFact.fact)
        ).all()
    )
    return int(rows.get("launch_success", 0)), int(rows.get("launch_failure", 0))


def auto_pause_failing(
    session: Session, candidates: Iterable[tuple[str, str]], thresholds: HealthThresholds
) -> list[str]:
    """Pause (rollout 0) the failing updates among ``(project_id, update_id)`` candidates of
    projects with ``auto_pause_on_failure``; returns the ids paused by this call. Commits."""
    paused: list[str] = []
    for project_id, update_id in sorted(set(candidates)):
        project = session.get(Project, project_id)
        if project is None or not project.auto_pause_on_failure:
            continue
        upd = session.get(Update, update_id)
        if upd is None or upd.project_id != project_id or upd.rollout == 0:
            continue
        health = evaluate_health(*launch_counts(session, project_id, update_id), thresholds)
        if not health.flagged:
            continue
        previous = upd.rollout
        # The WHERE makes the pause happen once even when several processes race here.
        result = session.execute(
            update(Update)
            .where(Update.id == update_id, Update.rollout > 0)
            .values(rollout=0)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            session.rollback()
            continue
        session.add(
            AuditEntry(
                key_id=None,
                project_id=project_id,
                action=AUTO_PAUSE_ACTION,
                target=update_id,
                detail={
                    "reason": "launch failure rate above threshold",
                    "previousRollout": previous,
                    "launches": health.launches,
                    "failures": health.failures,
                    "failureRate": rate(health.failures, health.launches),
                    "threshold": thresholds.failure_rate,
                },
            )
        )
        bump_delivery_revision(session)
        session.commit()
        paused.append(update_id)
    return paused
