"""Statistics recorder: cheap in-memory aggregation on the hot path, batched flushes to the DB.

Hot-path API (all O(1), no I/O; safe from the event loop and from worker threads)::

    recorder = ctx.stats                          # a StatsRecorder
    recorder.record_check(project_id=..., channel=..., platform=...,
                          served_update_id=None | "<update id>",
                          device_id=None | "<eas-client-id / deviceId>",
                          current_update_id=None | "...", embedded_update_id=None | "...",
                          failed_update_ids=("...",), source="<client address>")
    recorder.record_asset(nbytes=..., variant="identity" | "br" | "gzip" | "patch")
    recorder.record_events(project_id, device_id, [ClientEvent(...), ...])

What is counted, and why it can be trusted:

* ``checks`` is an additive counter per (project, channel, served update or "", UTC day):
  every manifest/check request answered. ``asset_bytes``/``asset_requests`` are server-wide.
* Device outcomes are *facts* stored once per (project, device, update, fact), whatever the
  number of reports: ``download``, ``install``, ``launch_success``, ``launch_failure``,
  ``rollback``, ``download_failure``. A device reporting that it runs update X (header
  ``expo-current-update-id`` or ``currentUpdateId``, when it differs from the embedded one)
  has downloaded, installed and successfully launched X; an id in
  ``expo-recent-failed-update-ids`` is a launch failure; SDK events say the rest, and each
  later stage implies the earlier ones (an install implies a download, a failed launch an
  install). So downloads >= installs >= launch successes (and failures) always hold, and no
  retry or repeated header inflates a figure. Reports without a device id count as checks.
* **Served-to records** (security): a check answered with an update, for a device id, records
  that the update was served to that device, and from which *source* (``stats_source``: the
  client address, an IPv6 /64). Outcome facts of a device count in figures (``stats_report``)
  only when such a record exists: a device id that was never sent an update cannot report a
  launch or a failure of it, and the health figure (auto-pause) counts at most
  ``devices_per_source`` devices from each source. Callers pass only update ids that name an
  update of the project (``known``): made-up ids are dropped before they cost memory or a row,
  and at most ``MAX_FAILED_IDS_COUNTED`` failed ids of one request count.
* Each (project, UTC day, channel, device) that checks in is stored once: unique devices.
* The device's latest observation (channel, platform, current update, last seen) feeds the
  active-device figures; the newest observation wins across processes.

A background task flushes every ``settings.stats_flush_interval`` seconds, or as soon as the
batch holds ``FLUSH_EARLY_ROWS`` per-device rows (in a worker thread)
with additive upserts (``INSERT .. ON CONFLICT DO UPDATE SET value = value + excluded.value``)
and insert-or-ignore for facts, so any number of server processes add up exactly. Device rows
go in short chunked transactions (SQLite's write lock is held briefly), the counters last in
one transaction (``write_batch``). A failed flush keeps its batch for the next attempt;
``stop()`` flushes everything that is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Insert
from sqlalchemy.dialects import postgresql, sqlite

from lumora_ota.store.models import (
    DeviceDay,
    DeviceServed,
    DeviceState,
    DeviceUpdateFact,
    StatCounter,
)
from lumora_ota.store.outage import ThrottledLog, describe

log = logging.getLogger("lumora_ota.stats")

# Every fact a device can be credited with, once per update.
FACTS: tuple[str, ...] = (
    "download",
    "install",
    "launch_success",
    "launch_failure",
    "rollback",
    "download_failure",
)
# Each reported event stands for these facts: a later stage proves the earlier ones happened.
EVENT_FACTS: dict[str, tuple[str, ...]] = {
    "download_completed": ("download",),
    "download_failed": ("download_failure",),
    "install": ("download", "install"),
    "launch_success": ("download", "install", "launch_success"),
    "launch_failure": ("download", "install", "launch_failure"),
    "rollback": ("rollback",),
}
# What a device that reports running an update has done with it.
RUNNING_FACTS: tuple[str, ...] = ("download", "install", "launch_success")
# How far a client-supplied event time may be trusted; outside it the server's clock is used.
EVENT_TIME_PAST = timedelta(days=30)
# expo-updates reports at most the 5 newest updates that failed to launch
# (UpdateDao.loadRecentUpdateIdsWithFailedLaunch: ``... ORDER BY commit_time DESC LIMIT 5``);
# more ids in one request count no further.
MAX_FAILED_IDS_COUNTED = 5
# Per-device rows (devices, device days, served-to records, facts) a batch may hold while
# flushes fail (a database outage) or lag: a report that would take the batch past it is
# dropped (counted in ``totals["stats_dropped"]``) and only the counters keep counting, so a
# flood of fresh device ids cannot grow memory however long it lasts. About 500 bytes a row
# (key tuples, strings, timestamps): 25 MB at most, inside a worker's 200 MB (issue 21; it was
# 200,000, which alone could take 100 MB).
MAX_PENDING_ROWS = 50_000
# A batch past this many per-device rows is flushed at once rather than at the next interval,
# so a burst of new devices is written in bounded steps.
FLUSH_EARLY_ROWS = 10_000
# Devices new today (to this process) that one source may add; past it that source's new
# device ids are counted as checks only. Invented device ids are the one way anonymous
# requests add rows (3 a device); this bounds them per address and day. The map of sources
# is forgotten past SOURCES_LIMIT entries (memory stays bounded under a spread-out flood).
DEFAULT_NEW_DEVICES_PER_SOURCE = 5000
SOURCES_LIMIT = 100_000
EVENT_TIME_FUTURE = timedelta(days=1)
# Bound on remembered already-flushed facts and device days (keeps re-sent ones out of later
# batches; the writes ignore duplicates anyway). They are remembered by ``hash()`` of the key,
# about 60 bytes an entry (3 MB per full set): keeping the key tuples kept every device id
# string alive too (about 250 bytes an entry), scattered among short-lived objects, which
# pinned memory the allocator could otherwise give back. Two keys sharing a 64-bit hash
# (odds about 1 in 10^14 at this size) would cost one idempotent write being skipped.
SEEN_FACTS_LIMIT = 50_000

CounterKey = tuple[str, str, str, date, str]  # project, channel, update, day, metric
FactKey = tuple[str, str, str, str]  # project, device, update, fact
DeviceKey = tuple[str, str]  # project, device
DeviceDayKey = tuple[str, date, str, str]  # project, day, channel, device
ServedKey = tuple[str, str, str]  # project, update, device


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """One event a client reported (already validated)."""

    type: str
    update_id: str | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeviceObservation:
    """The latest thing a device told us on a check."""

    channel: str
    platform: str
    current_update_id: str | None
    embedded_update_id: str | None
    seen_at: datetime


@dataclass
class StatsBatch:
    """Everything recorded since the last flush."""

    counters: dict[CounterKey, int]
    facts: dict[FactKey, datetime]
    devices: dict[DeviceKey, DeviceObservation]
    device_days: set[DeviceDayKey]
    # -> (source, first served at, why: channel, pin, rollout; issue 19's device timeline)
    served: dict[ServedKey, tuple[str, datetime, dict[str, Any] | None]]

    @classmethod
    def empty(cls) -> StatsBatch:
        """A batch with nothing in it."""
        return cls(counters={}, facts={}, devices={}, device_days=set(), served={})

    def __len__(self) -> int:
        return len(self.counters) + self.device_rows()

    def device_rows(self) -> int:
        """Rows about devices (everything but the counters): what ``MAX_PENDING_ROWS``
        bounds. The counters are bounded by projects, channels and updates."""
        return len(self.facts) + len(self.devices) + len(self.device_days) + len(self.served)

    def merge(self, newer: StatsBatch) -> None:
        """Fold ``newer`` (recorded later) into this batch."""
        for key, n in newer.counters.items():
            self.counters[key] = self.counters.get(key, 0) + n
        for fkey, at in newer.facts.items():
            self.facts.setdefault(fkey, at)
        self.devices.update(newer.devices)
        self.device_days |= newer.device_days
        for skey, value in newer.served.items():
            self.served.setdefault(skey, value)


@functools.lru_cache(maxsize=4096)
def stats_source(host: str | None) -> str:
    """The source a request is counted under: its client address, IPv6 by /64 network (one
    subscriber's allocation), "" when unknown. Per-source caps are applied to this value."""
    if not host:
        return ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def event_time(reported: datetime | None, now: datetime) -> datetime:
    """The time to file an event under: the client's, when plausible, else ``now``."""
    if reported is None:
        return now
    if reported.tzinfo is None:
        reported = reported.replace(tzinfo=UTC)
    if now - EVENT_TIME_PAST <= reported <= now + EVENT_TIME_FUTURE:
        return reported.astimezone(UTC)
    return now


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


FlushHook = Callable[[StatsBatch], None]


class StatsRecorder:
    """In-memory statistics of one server process, flushed to the database in batches."""

    def __init__(
        self,
        engine: Engine,
        *,
        flush_interval: float = 1.0,
        clock: Callable[[], datetime] = utc_now,
        new_devices_per_source: int = DEFAULT_NEW_DEVICES_PER_SOURCE,
    ) -> None:
        self._engine = engine
        # A floor keeps a zero or negative setting from spinning the flush loop.
        self._flush_interval = max(flush_interval, 0.05)
        self._clock = clock
        self._lock = threading.Lock()
        self._batch = StatsBatch.empty()
        self._failure_log = ThrottledLog(log)
        self._flush_lock = threading.Lock()
        self._seen_facts: set[int] = set()  # hash() of FactKey
        self._seen_days: set[int] = set()  # hash() of DeviceDayKey
        self._seen_served: set[int] = set()  # hash() of ServedKey
        self._new_devices_per_source = new_devices_per_source
        self._new_devices: dict[str, int] = {}  # source -> devices new today
        self._new_devices_day: date | None = None
        self._seen_reporters: set[int] = set()  # hash() of (project, day, device): events
        self._task: asyncio.Task[None] | None = None
        self._after_flush: list[FlushHook] = []
        # Process-local running totals, read by /metrics.
        self.totals: dict[str, int] = {}
        self.flushes = 0
        self.flush_errors = 0
        self.early_flushes = 0
        # Set by the hot path to flush before the interval (``FLUSH_EARLY_ROWS``).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._early_requested = False

    # ------------------------------------------------------------------ hot path

    def record_check(
        self,
        *,
        project_id: str,
        channel: str,
        platform: str,
        served_update_id: str | None,
        device_id: str | None = None,
        current_update_id: str | None = None,
        embedded_update_id: str | None = None,
        failed_update_ids: Sequence[str] = (),
        source: str = "",
        known: Callable[[str], bool] = lambda _update_id: True,
        reason: dict[str, Any] | None = None,
    ) -> None:
        """Count one answered manifest/check request and what its headers say.

        ``served_update_id`` is the update the answer offered (a served-to record for
        ``device_id``, from ``source``). ``known(update_id)`` says whether an id names an
        update of the project: the running and failed ids that do not are not recorded.
        """
        now = self._clock()
        day = now.date()
        ckey = (project_id, channel, served_update_id or "", day, "checks")
        if not device_id:  # a count, nothing more (the commonest check of all)
            with self._lock:
                counters = self._batch.counters
                counters[ckey] = counters.get(ckey, 0) + 1
                self.totals["checks"] = self.totals.get("checks", 0) + 1
            return
        running = current_update_id if current_update_id != embedded_update_id else None
        failed = [f for f in failed_update_ids if f and f != embedded_update_id and known(f)][
            :MAX_FAILED_IDS_COUNTED
        ]
        with self._lock:
            batch = self._batch
            batch.counters[ckey] = batch.counters.get(ckey, 0) + 1
            self.totals["checks"] = self.totals.get("checks", 0) + 1
            dkey = (project_id, day, channel, device_id)
            new_today = hash(dkey) not in self._seen_days and dkey not in batch.device_days
            # Rows this report may add, at most: its device, device day, served-to record,
            # and the facts of the update it runs and of its failed ones.
            adds = 3 + len(RUNNING_FACTS) * (running is not None) + 3 * len(failed)
            if batch.device_rows() + adds > MAX_PENDING_ROWS or (
                new_today and not self._admit(source, day)
            ):
                self.totals["stats_dropped"] = self.totals.get("stats_dropped", 0) + 1
                return
            if new_today:  # its events later today draw on no budget again
                self._seen_reporters.add(hash((project_id, day, device_id)))
            batch.devices[(project_id, device_id)] = DeviceObservation(
                channel, platform, current_update_id, embedded_update_id, now
            )
            if new_today:
                batch.device_days.add(dkey)
            if served_update_id:
                skey = (project_id, served_update_id, device_id)
                if hash(skey) not in self._seen_served and skey not in batch.served:
                    batch.served[skey] = (source, now, reason)
            if running and known(running):
                for fact in RUNNING_FACTS:
                    self._add_fact((project_id, device_id, running, fact), now)
            for failed_id in failed:
                for fact in EVENT_FACTS["launch_failure"]:
                    self._add_fact((project_id, device_id, failed_id, fact), now)
            self._maybe_flush_early(batch)

    def _admit(self, source: str, day: date) -> bool:
        """Whether ``source`` may add one more device new today (caller holds the lock)."""
        if day != self._new_devices_day or len(self._new_devices) > SOURCES_LIMIT:
            self._new_devices.clear()
            self._new_devices_day = day
        count = self._new_devices.get(source, 0)
        if count >= self._new_devices_per_source:
            return False
        self._new_devices[source] = count + 1
        return True

    def record_asset(self, *, nbytes: int, variant: str = "identity") -> None:
        """Count one asset response of ``nbytes`` bytes (server-wide)."""
        day = self._clock().date()
        bkey = ("", "", "", day, "asset_bytes")
        rkey = ("", "", "", day, "asset_requests")
        with self._lock:
            counters = self._batch.counters
            counters[bkey] = counters.get(bkey, 0) + nbytes
            counters[rkey] = counters.get(rkey, 0) + 1
            self.totals["asset_bytes"] = self.totals.get("asset_bytes", 0) + nbytes
            self.totals[f"asset_requests_{variant}"] = (
                self.totals.get(f"asset_requests_{variant}", 0) + 1
            )

    def record_update_counter(
        self, *, project_id: str, channel: str, update_id: str, metric: str, value: int
    ) -> None:
        """Add ``value`` to a per-update counter (delta updates: ``patch_bytes_saved``,
        ``patch_downloads``, ``compression_bytes_saved``; see server/device/patches.py)."""
        key = (project_id, channel, update_id, self._clock().date(), metric)
        with self._lock:
            counters = self._batch.counters
            counters[key] = counters.get(key, 0) + value
            self.totals[metric] = self.totals.get(metric, 0) + value

    def record_events(
        self,
        project_id: str,
        device_id: str,
        events: Iterable[ClientEvent],
        *,
        known: Callable[[str], bool] = lambda _update_id: True,
        source: str = "",
    ) -> None:
        """File client events (already validated) as device facts; events naming no update
        of the project (``known``) are dropped, and so are the events of a device id new to
        this process today past ``source``'s new-device budget."""
        now = self._clock()
        events = list(events)
        with self._lock:
            for event in events:
                self.totals[f"events_{event.type}"] = self.totals.get(f"events_{event.type}", 0) + 1
            relevant = [(e, e.update_id) for e in events if e.update_id and known(e.update_id)]
            if not relevant:
                return
            reporter = hash((project_id, now.date(), device_id))
            if reporter not in self._seen_reporters:
                if not self._admit(source, now.date()):
                    self.totals["stats_dropped"] = self.totals.get("stats_dropped", 0) + 1
                    return
                if len(self._seen_reporters) > SEEN_FACTS_LIMIT:
                    self._seen_reporters.clear()
                self._seen_reporters.add(reporter)
            for event, update_id in relevant:
                facts = EVENT_FACTS.get(event.type, ())
                if self._batch.device_rows() + len(facts) > MAX_PENDING_ROWS:
                    self.totals["stats_dropped"] = self.totals.get("stats_dropped", 0) + 1
                    continue
                at = event_time(event.at, now)
                for fact in facts:
                    self._add_fact((project_id, device_id, update_id, fact), at)
            self._maybe_flush_early(self._batch)

    def _maybe_flush_early(self, batch: StatsBatch) -> None:
        """Wake the flush task when ``batch`` has grown past ``FLUSH_EARLY_ROWS`` (once per
        batch; the caller holds the lock; callable from any thread)."""
        if self._early_requested or batch.device_rows() < FLUSH_EARLY_ROWS:
            return
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return  # no flush task running: ``flush()`` is called by hand
        self._early_requested = True
        self.early_flushes += 1
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(wake.set)

    def _add_fact(self, key: FactKey, at: datetime) -> None:
        # Caller holds self._lock.
        if hash(key) in self._seen_facts:
            return
        facts = self._batch.facts
        if key not in facts or at < facts[key]:
            facts[key] = at

    # ------------------------------------------------------------------ flushing

    def add_flush_hook(self, hook: FlushHook) -> None:
        """Call ``hook(batch)`` (in the flush thread) after each successful flush."""
        self._after_flush.append(hook)

    @property
    def pending(self) -> int:
        """How many distinct rows wait for the next flush."""
        with self._lock:
            return len(self._batch)

    def flush(self) -> int:
        """Write everything recorded so far; returns the number of rows written.

        Blocking (database I/O): call from a worker thread. On failure the batch is kept for
        the next attempt and the error is raised.
        """
        with self._flush_lock:
            with self._lock:
                batch, self._batch = self._batch, StatsBatch.empty()
                self._early_requested = False
            if not batch:
                return 0
            try:
                write_batch(self._engine, batch)
            except Exception:
                self.flush_errors += 1
                with self._lock:
                    batch.merge(self._batch)
                    self._batch = batch
                raise
            self.flushes += 1
            with self._lock:
                if len(self._seen_facts) + len(batch.facts) > SEEN_FACTS_LIMIT:
                    self._seen_facts.clear()
                self._seen_facts.update(map(hash, batch.facts))
                if len(self._seen_days) + len(batch.device_days) > SEEN_FACTS_LIMIT:
                    self._seen_days.clear()
                self._seen_days.update(map(hash, batch.device_days))
                if len(self._seen_served) + len(batch.served) > SEEN_FACTS_LIMIT:
                    self._seen_served.clear()
                self._seen_served.update(map(hash, batch.served))
            for hook in self._after_flush:
                try:
                    hook(batch)
                except Exception:
                    log.exception("stats flush hook failed")
            return len(batch)

    async def _run(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self._flush_interval)
            wake.clear()
            try:
                await asyncio.to_thread(self.flush)
            except Exception as exc:
                # Once per interval, not every flush: a database outage lasts many flushes.
                self._failure_log.warning(
                    "flush", "stats flush failed; will retry: %s", describe(exc)
                )
            else:
                self._failure_log.recovered("flush", "stats flush works again")

    async def start(self) -> None:
        """Start the periodic flush task."""
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="lumora-stats-flush")

    async def stop(self) -> None:
        """Stop the periodic task and flush what is left (graceful shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self.flush)


# ---------------------------------------------------------------------- database writes


def _insert(engine: Engine, table: Any) -> Any:
    """The dialect's INSERT construct, which knows ON CONFLICT."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# Rows per transaction when writing device rows: SQLite has one writer at a time, so a flush
# of thousands of random devices must not hold the write lock for all of them at once
# (management writes waiting behind it ran into the busy timeout).
WRITE_CHUNK_ROWS = 500


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def write_batch(engine: Engine, batch: StatsBatch, *, chunk_rows: int | None = None) -> None:
    """Write one batch: set-based upserts in short transactions, counted exactly once.

    Every row is prepared before any transaction starts, so the write lock is held only while
    the database works. Facts, device days and device states are idempotent (insert-or-ignore,
    newest-observation-wins), so they go in chunks of ``chunk_rows``, one short transaction
    each (default ``WRITE_CHUNK_ROWS``): a failure half-way leaves nothing a retry would
    double. The additive counters go last, all in one transaction: when it fails, the retry
    writes them once; when it commits, the batch is done.
    """
    size = chunk_rows or WRITE_CHUNK_ROWS
    for statement, rows in _idempotent_writes(engine, batch):
        for chunk in _chunks(rows, size):
            with engine.begin() as conn:
                conn.execute(statement, chunk)
    if batch.counters:
        with engine.begin() as conn:
            write_counters(conn, batch.counters)


def write_counters(conn: Connection, counters: Mapping[CounterKey, int]) -> None:
    """Add ``counters`` to ``stat_counters`` (additive upserts) in ``conn``'s transaction."""
    if not counters:
        return
    stmt = _insert(conn.engine, StatCounter.__table__)
    stmt = stmt.on_conflict_do_update(
        index_elements=["project_id", "channel", "update_id", "day", "metric"],
        set_={"value": StatCounter.__table__.c.value + stmt.excluded.value},
    )
    rows = [
        {"project_id": p, "channel": c, "update_id": u, "day": d, "metric": m, "value": n}
        for (p, c, u, d, m), n in sorted(counters.items())
    ]
    conn.execute(stmt, rows)


def _idempotent_writes(engine: Engine, batch: StatsBatch) -> list[tuple[Any, list[dict[str, Any]]]]:
    """(statement, rows) of the batch's facts, device days and device states."""
    writes: list[tuple[Any, list[dict[str, Any]]]] = []
    if batch.served:
        sstmt: Insert = _insert(engine, DeviceServed.__table__)
        sstmt = sstmt.on_conflict_do_nothing(  # type: ignore[attr-defined]
            index_elements=["project_id", "update_id", "device_id"]
        )
        rows: list[dict[str, Any]] = [
            {
                "project_id": p,
                "update_id": u,
                "device_id": dev,
                "source": src,
                "at": at,
                "reason": why,
            }
            for (p, u, dev), (src, at, why) in sorted(batch.served.items())
        ]
        writes.append((sstmt, rows))
    if batch.facts:
        fstmt: Insert = _insert(engine, DeviceUpdateFact.__table__)
        fstmt = fstmt.on_conflict_do_nothing(  # type: ignore[attr-defined]
            index_elements=["project_id", "device_id", "update_id", "fact"]
        )
        rows = [
            {
                "project_id": p,
                "device_id": dev,
                "update_id": u,
                "fact": f,
                "day": at.date(),
                "at": at,
            }
            for (p, dev, u, f), at in sorted(batch.facts.items())
        ]
        writes.append((fstmt, rows))
    if batch.device_days:
        ddstmt: Insert = _insert(engine, DeviceDay.__table__)
        ddstmt = ddstmt.on_conflict_do_nothing(  # type: ignore[attr-defined]
            index_elements=["project_id", "day", "channel", "device_id"]
        )
        rows = [
            {"project_id": p, "day": d, "channel": c, "device_id": dev}
            for p, d, c, dev in sorted(batch.device_days)
        ]
        writes.append((ddstmt, rows))
    if batch.devices:
        table = DeviceState.__table__
        dstmt = _insert(engine, table)
        dstmt = dstmt.on_conflict_do_update(
            index_elements=["project_id", "device_id"],
            set_={
                "channel": dstmt.excluded.channel,
                "platform": dstmt.excluded.platform,
                "current_update_id": dstmt.excluded.current_update_id,
                "embedded_update_id": dstmt.excluded.embedded_update_id,
                "last_seen": dstmt.excluded.last_seen,
            },
            # Another process may have flushed a newer observation already.
            where=table.c.last_seen <= dstmt.excluded.last_seen,
        )
        rows = [
            {
                "project_id": p,
                "device_id": dev,
                "channel": o.channel,
                "platform": o.platform,
                "current_update_id": o.current_update_id,
                "embedded_update_id": o.embedded_update_id,
                "first_seen": o.seen_at,
                "last_seen": o.seen_at,
            }
            for (p, dev), o in sorted(batch.devices.items())
        ]
        writes.append((dstmt, rows))
    return writes
