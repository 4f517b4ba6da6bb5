"""Statistics retention: detailed rows older than ``LUMORA_STATS_RETENTION_DAYS`` are rolled up
into daily counters and deleted, so storage is bounded by the devices seen within the
retention and the updates published, whatever the traffic.

What is rolled up, per UTC day (``stat_counters``, see ``lumora_ota.stats``):

* ``device_days`` older than the retention become ``devices`` counters per (project, channel,
  day): the daily unique-device figure survives, the device ids do not.
* A device not seen for the whole retention loses its ``device_state`` row; then its outcome
  facts and served-to records are deleted, the facts that counted (served-to) first becoming
  ``fact_<name>`` counters per (project, update's channel, update, day).

Counters (checks, asset bytes, rolled-up figures) are a few rows per update and day and are
kept. The health figure (auto-pause) reads detailed rows only: devices gone for the whole
retention no longer weigh in it.

Every step deletes with ``RETURNING`` and rolls up what *it* deleted, in one transaction, so
several server processes pruning at once never count a row twice. Pure rules (the cutoff) are
in ``retention_cutoff``; ``prune_statistics`` does the I/O (call it from a worker thread).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, exists, select

from lumora_ota.stats import write_counters
from lumora_ota.store.models import (
    Channel,
    DeviceDay,
    DeviceServed,
    DeviceState,
    DeviceUpdateFact,
    Update,
)

log = logging.getLogger("lumora_ota.stats")

# The active-device windows reach 30 days back: a shorter retention would cut them.
MIN_RETENTION_DAYS = 31
# How often each server process prunes (seconds); also once shortly after start.
PRUNE_INTERVAL = 3600.0
# Device ids handled per transaction when deleting inactive devices' rows.
PRUNE_CHUNK = 1000


@dataclass(frozen=True)
class PruneResult:
    """Rows deleted by one ``prune_statistics`` run."""

    device_days: int = 0
    devices: int = 0
    facts: int = 0
    served: int = 0


def retention_cutoff(now: datetime, retention_days: int) -> datetime:
    """The oldest time still kept in detail: ``now`` minus the retention (at least
    ``MIN_RETENTION_DAYS``)."""
    return now - timedelta(days=max(retention_days, MIN_RETENTION_DAYS))


def prune_statistics(engine: Engine, now: datetime, retention_days: int) -> PruneResult:
    """Roll up and delete what is older than the retention (module docstring)."""
    cutoff = retention_cutoff(now, retention_days)
    days = _prune_device_days(engine, cutoff.date())
    devices = facts = served = 0
    while True:
        with engine.begin() as conn:
            gone = conn.execute(
                delete(DeviceState)
                .where(
                    and_(
                        DeviceState.last_seen < cutoff,
                        DeviceState.device_id.in_(
                            select(DeviceState.device_id)
                            .where(DeviceState.last_seen < cutoff)
                            .limit(PRUNE_CHUNK)
                            .scalar_subquery()
                        ),
                    )
                )
                .returning(DeviceState.project_id, DeviceState.device_id)
            ).all()
        devices += len(gone)
        if len(gone) < PRUNE_CHUNK:
            break
    # Facts and served-to records of devices that no longer have a state row, from before the
    # cutoff: the devices just deleted, and events-only device ids that never checked in.
    while True:
        with engine.begin() as conn:
            n_served, n_facts = _prune_orphans(conn, cutoff)
        served += n_served
        facts += n_facts
        if n_served < PRUNE_CHUNK and n_facts < PRUNE_CHUNK:
            break
    result = PruneResult(days, devices, facts, served)
    if any((days, devices, facts, served)):
        log.info("statistics retention: rolled up and deleted %s", result)
    return result


def _prune_device_days(engine: Engine, cutoff_day: date) -> int:
    with engine.begin() as conn:
        rows = conn.execute(
            delete(DeviceDay)
            .where(DeviceDay.day < cutoff_day)
            .returning(DeviceDay.project_id, DeviceDay.channel, DeviceDay.day)
        ).all()
        per_day = Counter((p, c, "", _as_date(d), "devices") for p, c, d in rows)
        write_counters(conn, per_day)
    return len(rows)


def _prune_orphans(conn: Connection, cutoff: datetime) -> tuple[int, int]:
    """One chunk of served-to records and facts of stateless devices older than ``cutoff``."""
    no_state_served = ~exists().where(
        DeviceState.project_id == DeviceServed.project_id,
        DeviceState.device_id == DeviceServed.device_id,
    )
    served_keys = {
        (p, u, d)
        for p, u, d in conn.execute(
            delete(DeviceServed)
            .where(
                DeviceServed.device_id.in_(
                    select(DeviceServed.device_id)
                    .where(DeviceServed.at < cutoff, no_state_served)
                    .limit(PRUNE_CHUNK)
                    .scalar_subquery()
                ),
                DeviceServed.at < cutoff,
                no_state_served,
            )
            .returning(DeviceServed.project_id, DeviceServed.update_id, DeviceServed.device_id)
        )
    }
    no_state_fact = ~exists().where(
        DeviceState.project_id == DeviceUpdateFact.project_id,
        DeviceState.device_id == DeviceUpdateFact.device_id,
    )
    fact_rows = conn.execute(
        delete(DeviceUpdateFact)
        .where(
            DeviceUpdateFact.device_id.in_(
                select(DeviceUpdateFact.device_id)
                .where(DeviceUpdateFact.at < cutoff, no_state_fact)
                .limit(PRUNE_CHUNK)
                .scalar_subquery()
            ),
            DeviceUpdateFact.at < cutoff,
            no_state_fact,
        )
        .returning(
            DeviceUpdateFact.project_id,
            DeviceUpdateFact.device_id,
            DeviceUpdateFact.update_id,
            DeviceUpdateFact.fact,
            DeviceUpdateFact.day,
        )
    ).all()
    counted = [
        (p, u, f, _as_date(day)) for p, dev, u, f, day in fact_rows if (p, u, dev) in served_keys
    ]
    channels = _channels_of(conn, {u for _p, u, _f, _d in counted})
    per_day: Counter[tuple[str, str, str, date, str]] = Counter(
        (p, channels.get(u, ""), u, day, f"fact_{f}") for p, u, f, day in counted
    )
    write_counters(conn, per_day)
    return len(served_keys), len(fact_rows)


def _channels_of(conn: Connection, update_ids: set[str]) -> dict[str, str]:
    if not update_ids:
        return {}
    rows = conn.execute(
        select(Update.id, Channel.name)
        .join(Channel, Channel.id == Update.channel_id)
        .where(Update.id.in_(update_ids))
    )
    return {uid: name for uid, name in rows}


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))
