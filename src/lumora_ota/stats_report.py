"""Statistics figures read back from the database, and the update health signal.

``build_report`` answers ``GET /api/v1/stats``: totals, a daily series and per-update figures
for a set of projects, optionally narrowed to a channel, an update and a day range. Figures
are defined in ``lumora_ota.stats``; device outcomes count devices, never raw reports.

Device outcomes count only for devices the server served the update to (a ``device_served``
row, see ``lumora_ota.stats``): ``counted_facts`` is the one place that rule is applied.

``evaluate_health`` is the pure health rule: an update is flagged when at least
``min_launches`` devices launched it (successfully or not), at least ``min_failures`` failed,
and the share that failed exceeds ``failure_rate``. The health figure (``health_counts``)
counts at most ``devices_per_source`` devices of each source (client address) per outcome, so
one address cannot pause a rollout, nor dilute real failures, with invented device ids.
``auto_pause_failing`` applies it after each flush and, for projects with
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
from sqlalchemy.orm.attributes import set_committed_value

from lumora_ota.store import webhooks
from lumora_ota.store.models import (
    AuditEntry,
    Channel,
    DeviceDay,
    DeviceServed,
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
    # Failing devices (after the per-source cap) needed before an update is flagged.
    min_failures: int = 10
    # Devices one source (client address) adds to an update's health figure, per outcome.
    devices_per_source: int = 3


def health_thresholds(settings: Any) -> HealthThresholds:
    """The thresholds a ``Settings`` configures (``LUMORA_HEALTH_*``,
    ``LUMORA_STATS_DEVICES_PER_SOURCE``)."""
    return HealthThresholds(
        failure_rate=settings.health_failure_rate,
        min_launches=settings.health_min_launches,
        min_failures=settings.health_min_failures,
        devices_per_source=settings.stats_devices_per_source,
    )


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
    """The health rule: flagged when launches >= min, failures >= min and the failure share
    exceeds the rate."""
    launches = successes + failures
    failure_rate = rate(failures, launches)
    flagged = (
        launches >= thresholds.min_launches
        and launches > 0
        and failures >= thresholds.min_failures
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


def served_join(fact: Any = DeviceUpdateFact) -> Any:
    """The join condition of a fact (or device state: ``current_update_id``) with the record
    that its update was served to its device."""
    update_col = fact.update_id if fact is DeviceUpdateFact else fact.current_update_id
    return and_(
        DeviceServed.project_id == fact.project_id,
        DeviceServed.update_id == update_col,
        DeviceServed.device_id == fact.device_id,
    )


def counted_facts(*columns: Any) -> Any:
    """SELECT ``columns`` over the facts that count: of real updates of their project, from
    devices the update was served to."""
    return (
        select(*columns)
        .select_from(DeviceUpdateFact)
        .join(
            Update,
            and_(
                Update.id == DeviceUpdateFact.update_id,
                Update.project_id == DeviceUpdateFact.project_id,
            ),
        )
        .join(DeviceServed, served_join())
    )


def _fact_query(query: StatsQuery, *columns: Any) -> Any:
    """SELECT over the counted facts of the projects, narrowed by the query."""
    stmt = counted_facts(*columns).where(_in_projects(DeviceUpdateFact.project_id, query))
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


ROLLED_FACT_PREFIX = "fact_"  # rolled-up facts (lumora_ota.stats_retention)
ROLLED_DEVICES = "devices"


def _rolled(query: StatsQuery, *columns: Any) -> Any:
    """SELECT over the counters that statistics retention rolled detailed rows up into,
    narrowed by the query (day range, projects, channel, update)."""
    stmt = (
        select(*columns)
        .where(_in_projects(StatCounter.project_id, query))
        .where(StatCounter.project_id != "")
        .where(_in_range(StatCounter.day, query))
    )
    if query.channel:
        stmt = stmt.where(StatCounter.channel == query.channel)
    if query.update_id:
        stmt = stmt.where(StatCounter.update_id == query.update_id)
    return stmt


def _rolled_facts(session: Session, query: StatsQuery, key: Any) -> dict[tuple[Any, str], int]:
    """Rolled-up fact counts by (``key`` column value, fact)."""
    rows = session.execute(
        _rolled(query, key, StatCounter.metric, func.sum(StatCounter.value))
        .where(StatCounter.metric.like(ROLLED_FACT_PREFIX + "%"))
        .group_by(key, StatCounter.metric)
    )
    return {(k, metric.removeprefix(ROLLED_FACT_PREFIX)): int(n or 0) for k, metric, n in rows}


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
    if not query.update_id:
        # Days past the retention: the rolled-up daily figures. The device ids are gone, so
        # a range reaching back there reports at least its busiest day.
        for day, n in session.execute(
            _rolled(query, StatCounter.day, func.sum(StatCounter.value))
            .where(StatCounter.metric == ROLLED_DEVICES)
            .group_by(StatCounter.day)
        ):
            per_day[_as_date(day)] = per_day.get(_as_date(day), 0) + int(n or 0)
    return max(int(total), max(per_day.values(), default=0)), per_day


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
        # Active on an update: devices running it that were served it.
        stmt = stmt.join(DeviceServed, served_join(DeviceState)).where(
            DeviceState.current_update_id == query.update_id
        )
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
    for ukey, n in _rolled_facts(session, query, StatCounter.update_id).items():
        in_range[ukey] = in_range.get(ukey, 0) + n
    all_time = health_counts(
        session,
        thresholds,
        project_ids=query.project_ids,
        update_id=query.update_id,
    )
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
        .join(DeviceServed, served_join(DeviceState))
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
    ids = {uid for uid, _ in in_range} | set(all_time) | set(checks) | set(active)
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
        health = evaluate_health(*all_time.get(upd.id, (0, 0)), thresholds)
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
    for (day, fact), n in _rolled_facts(session, query, StatCounter.day).items():
        facts[(_as_date(day), fact)] = facts.get((_as_date(day), fact), 0) + n
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
            "minFailures": thresholds.min_failures,
            "devicesPerSource": thresholds.devices_per_source,
        },
    }


# ---------------------------------------------------------------------- auto-pause


def health_counts(
    session: Session,
    thresholds: HealthThresholds,
    *,
    project_ids: Sequence[str] | None = None,
    update_id: str | None = None,
) -> dict[str, tuple[int, int]]:
    """All-time (successes, failures) device counts per update: counted facts only, and at
    most ``thresholds.devices_per_source`` devices of each source per outcome (the first to
    report it)."""
    rank = (
        func.row_number()
        .over(
            partition_by=(
                DeviceUpdateFact.project_id,
                DeviceUpdateFact.update_id,
                DeviceServed.source,
                DeviceUpdateFact.fact,
            ),
            order_by=(DeviceUpdateFact.at, DeviceUpdateFact.device_id),
        )
        .label("rank")
    )
    ranked = counted_facts(DeviceUpdateFact.update_id, DeviceUpdateFact.fact, rank).where(
        DeviceUpdateFact.fact.in_(("launch_success", "launch_failure"))
    )
    if project_ids is not None:
        ranked = ranked.where(DeviceUpdateFact.project_id.in_(project_ids))
    if update_id is not None:
        ranked = ranked.where(DeviceUpdateFact.update_id == update_id)
    sub = ranked.subquery()
    counts: dict[str, list[int]] = {}
    for uid, fact, n in session.execute(
        select(sub.c.update_id, sub.c.fact, func.count())
        .where(sub.c.rank <= max(thresholds.devices_per_source, 1))
        .group_by(sub.c.update_id, sub.c.fact)
    ):
        counts.setdefault(uid, [0, 0])[0 if fact == "launch_success" else 1] = int(n)
    return {uid: (ok, failed) for uid, (ok, failed) in counts.items()}


def launch_counts(
    session: Session, project_id: str, update_id: str, thresholds: HealthThresholds
) -> tuple[int, int]:
    """All-time (successes, failures) device counts of one update's health figure."""
    counts = health_counts(session, thresholds, project_ids=[project_id], update_id=update_id)
    return counts.get(update_id, (0, 0))


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
        health = evaluate_health(
            *launch_counts(session, project_id, update_id, thresholds), thresholds
        )
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
        # The statement above paused it; mirror that on the loaded object without marking it
        # changed (a second flush would move the delivery revision again).
        set_committed_value(upd, "rollout", 0)
        data = {
            **webhooks.update_data(upd),
            "previousRollout": previous,
            "reason": "launch failure rate above threshold",
            "launches": health.launches,
            "failures": health.failures,
        }
        webhooks.emit(session, project_id, "update.flagged", data)
        webhooks.rollout_changed(session, upd, previous)
        session.commit()
        paused.append(update_id)
    return paused
