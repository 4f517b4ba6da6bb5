"""The delivery cache: what the device hot path answers from, without touching the database.

Everything a check or manifest request needs — the project id/slug map, each (project,
channel, platform)'s updates newest first, the project's signing key — is loaded once, on
first use, into a *generation*. Serialized bodies (manifests, directives, whole multipart
responses) and their signatures are memoized in the same generation: an update's manifest is
immutable, so each body is built and signed once.

A generation is dropped when the delivery revision (``store.db``) changes:

* a background poller reads the revision every ``cache_poll_interval`` seconds, so changes
  made by other server processes sharing the database are served within about that long;
* changes committed by this process are seen at once: ``bump_delivery_revision`` marks its
  connection, and engine events drop the generation around the commit of a marked one.

The same row holds the *patch revision*, bumped when delta patches are recorded. It is read by
the same poll (and noticed on local commits the same way) but drops nothing here: it only
moves ``patch_changes``, which the patch index (``server/device/patches.py``) watches.

Loads run in a worker thread and write into the generation they started from, so a load that
races with an invalidation only fills a generation nobody reads any more. Each load runs once
per key and generation: concurrent requests missing the same key wait for the one load in
flight instead of starting their own (a cold channel of 10,000 updates would otherwise be
loaded once per waiting request).

Candidate lists hold only what selection reads (no assets, no metadata), so a channel's whole
history stays small; the full record (assets, metadata) of an update actually served is
loaded on first use and kept, bounded, per generation.

Outages. Dropping a generation keeps what it (and the one before) had loaded as a *snapshot*,
the last good answers. A load that fails with a database error (PostgreSQL down, a lost
connection) answers from the snapshot instead, and the cache stops asking the database until
a retry time that backs off from ``RETRY_MIN_SECONDS`` to ``RETRY_MAX_SECONDS``; a load that
takes longer than ``STALE_AFTER_SECONDS`` answers the waiting request from the snapshot too
and finishes for later ones. Snapshot values are answered, never stored in the generation,
so the first load that succeeds serves the new state without a restart. With nothing in the
snapshot to answer from, a lookup raises ``DependencyUnavailable`` (a 503 for the device).
Loads read in read-only transactions (``BEGIN``, not ``BEGIN IMMEDIATE`` on SQLite), so a
write lock held elsewhere never stalls them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from array import array
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Engine, event, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, joinedload, selectinload, sessionmaker
from starlette.concurrency import run_in_threadpool

from lumora_ota.domain.model import UpdateKind, UpdateRecord, UpdateStatus
from lumora_ota.domain.runtime import parse_device_version, parse_range, runtime_matches
from lumora_ota.domain.runtime_ranges import RangeIndex
from lumora_ota.domain.selection import IndexedCandidates
from lumora_ota.signing import (
    PublisherIdentity,
    Signer,
    SigningError,
    load_certificate,
    load_signing_identity,
    read_key_file,
)
from lumora_ota.store.db import DELIVERY_BUMPED, PATCH_BUMPED, read_revisions
from lumora_ota.store.models import (
    Channel,
    DevicePin,
    Project,
    PublisherSignature,
    SigningKey,
    Update,
)
from lumora_ota.store.outage import (
    DependencyUnavailable,
    ThrottledLog,
    database_name,
    describe,
)
from lumora_ota.store.repository import to_record

log = logging.getLogger("lumora_ota.delivery")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Bounds on what devices can make us remember: each distinct runtime version a device sends
# (ranges accept many) gets a filtered candidate list and its own manifest bodies.
MAX_RUNTIME_LISTS = 4096
# Remembered runtime versions that match no update of their channel (about 200 bytes each).
MAX_NO_MATCH = 16384
MAX_BODIES = 8192
# Full records (with assets) of served updates: devices are served a channel's newest few.
MAX_FULL_UPDATES = 512
# Memoized device answers per request shape (``shape_memo``): started over when full, so
# devices sending random shapes cost memory up to this bound and real shapes are relearned.
# An app's devices send few shapes (platforms x runtime versions x the updates they run);
# kept well under MAX_BODIES since an entry can keep a body the bodies memo has evicted.
MAX_SHAPES = 2048
# After a failed load the database is left alone (answers come from the snapshot) this long,
# doubling per failure in a row up to the maximum.
RETRY_MIN_SECONDS = 0.25
RETRY_MAX_SECONDS = 5.0
# A request waits this long for a load before it is answered from the snapshot (when the
# snapshot has the value); the load finishes for the requests after it.
STALE_AFTER_SECONDS = 0.5
_COMMITTED_FLAG = "lumora_delivery_bump_committed"
_PATCH_COMMITTED_FLAG = "lumora_patch_bump_committed"


class BoundedCache(Generic[K, V]):
    """A least-recently-used mapping that forgets its oldest entries past ``limit``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value under ``key`` (marking it recently used), or None."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> V:
        """Store ``value`` under ``key``; returns it."""
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._limit:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[K, V]]:
        """Every entry, least recently used first."""
        return list(self._items.items())


ChannelKey = tuple[str, str, str]  # project id, channel, platform
_NO_CANDIDATES = IndexedCandidates(())


@dataclass
class _Generation:
    """Everything loaded since the last invalidation."""

    projects: ProjectMap | None = None
    projects_loaded_at: float = 0.0
    candidates: dict[ChannelKey, tuple[UpdateRecord, ...]] = field(default_factory=dict)
    runtime_indexes: dict[ChannelKey, RuntimeIndex] = field(default_factory=dict)
    # Runtime versions that match nothing in their channel, apart from the positive lists:
    # devices sending random versions must not evict the lists real devices use.
    no_match: BoundedCache[tuple[str, str, str, str], bool] = field(
        default_factory=lambda: BoundedCache(MAX_NO_MATCH)
    )
    by_runtime: BoundedCache[tuple[str, str, str, str], IndexedCandidates] = field(
        default_factory=lambda: BoundedCache(MAX_RUNTIME_LISTS)
    )
    indexed_subsets: BoundedCache[tuple[ChannelKey, bytes], IndexedCandidates] = field(
        default_factory=lambda: BoundedCache(MAX_RUNTIME_LISTS)
    )
    full_updates: BoundedCache[str, UpdateRecord] = field(
        default_factory=lambda: BoundedCache(MAX_FULL_UPDATES)
    )
    signing: dict[str, Signer | None] = field(default_factory=dict)
    update_ids: dict[str, frozenset[str]] = field(default_factory=dict)
    pins: dict[str, dict[str, str]] = field(default_factory=dict)
    bodies: BoundedCache[Hashable, Any] = field(default_factory=lambda: BoundedCache(MAX_BODIES))
    # Whole answers by request shape, for shapes no device id can change (see ``shape_memo``).
    shapes: dict[Hashable, Any] = field(default_factory=dict)
    # Loads in flight, by key: concurrent misses share one (single flight).
    loading: dict[Hashable, asyncio.Future[Any]] = field(default_factory=dict)
    # The last good values, answered when a load fails or is slow (see the module docs).
    snapshot: Snapshot | None = None
    # The delivery revision read before this generation's first load: everything loaded
    # into it is at least this new (the sequence of signed check answers, ``freshness``).
    revision: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """What earlier generations loaded, kept to answer devices while the database cannot.

    Built when a generation is dropped: its values over its own snapshot's, without projects
    and channels the newest project map no longer has (so it is bounded by what exists, not
    by how many generations came before).
    """

    projects: ProjectMap | None
    candidates: dict[ChannelKey, tuple[UpdateRecord, ...]]
    full_updates: dict[str, UpdateRecord]
    signing: dict[str, Signer | None]
    update_ids: dict[str, frozenset[str]] = field(default_factory=dict)
    revision: int | None = None

    @classmethod
    def of(cls, generation: _Generation) -> Snapshot | None:
        """The snapshot that outlives ``generation``; None when nothing was ever loaded."""
        older = generation.snapshot
        projects = generation.projects or (older.projects if older else None)
        candidates = {**(older.candidates if older else {}), **generation.candidates}
        signing = {**(older.signing if older else {}), **generation.signing}
        full = dict(older.full_updates) if older else {}
        for update_id, record in generation.full_updates.items():
            full.pop(update_id, None)
            full[update_id] = record  # newest last
        while len(full) > MAX_FULL_UPDATES:
            del full[next(iter(full))]
        if projects is not None:
            channels = projects.channels
            candidates = {k: v for k, v in candidates.items() if k[1] in channels.get(k[0], ())}
            signing = {k: v for k, v in signing.items() if k in channels}
        update_ids = {**(older.update_ids if older else {}), **generation.update_ids}
        if projects is not None:
            update_ids = {k: v for k, v in update_ids.items() if k in projects.channels}
        if projects is None and not candidates and not full and not signing:
            return None
        revision = generation.revision
        if revision is None and older is not None:
            revision = older.revision
        return cls(projects, candidates, full, signing, update_ids, revision)


class RuntimeIndex:
    """A channel's history grouped by declared runtime version, so finding the updates that
    match a device's version costs neither the length of the history nor the number of
    distinct range declarations: an exact version is one dictionary lookup, and the range
    declarations (``1.2.x``, ``^1.0.0``) are answered by a ``RangeIndex`` (a binary search
    among their target versions, each answer computed once per cell; see
    ``domain/runtime_ranges.py``), so a version no update declares costs what a known one
    does however many ranges the channel declares."""

    __slots__ = ("_exact", "_range_names", "_ranges")

    def __init__(self, everything: tuple[UpdateRecord, ...]) -> None:
        by_version: dict[str, list[int]] = {}
        for position, update in enumerate(everything):
            by_version.setdefault(update.runtime_version, []).append(position)
        self._exact = {v: array("I", ps) for v, ps in by_version.items()}
        parsed = [(v, parse_range(v)) for v in by_version]
        declared = [v for v, spec in parsed if spec is not None]
        self._range_names = frozenset(declared)
        arrays = [self._exact[v] for v in declared]

        def merged(indices: tuple[int, ...]) -> array[int]:
            if len(indices) == 1:
                return arrays[indices[0]]
            return array("I", sorted(p for i in indices for p in arrays[i]))

        specs = [spec for _v, spec in parsed if spec is not None]
        self._ranges = RangeIndex(declared, merged, specs)

    def positions(self, runtime_version: str) -> array[int]:
        """Positions (ascending: newest first) of the updates matching ``runtime_version``."""
        exact = self._exact.get(runtime_version)
        if runtime_version in self._range_names and parse_device_version(runtime_version):
            # A declared range that is also a device version (``1.0.0-a.x``): rare, and its
            # own positions must not be counted twice; matched one by one.
            return array(
                "I",
                sorted(
                    p
                    for v, ps in self._exact.items()
                    if runtime_matches(v, runtime_version)
                    for p in ps
                ),
            )
        ranged = self._ranges.lookup(runtime_version) if len(self._ranges) else _NO_POSITIONS
        if exact is None:
            return ranged
        if not ranged:
            return exact
        return array("I", sorted((*exact, *ranged)))


_NO_POSITIONS: array[int] = array("I")


# ---------------------------------------------------------------- loaders (worker thread)


@dataclass(frozen=True)
class ProjectMap:
    """Every project (by id and by slug) and its channel names."""

    ids: dict[str, str]  # project id or slug -> project id
    channels: dict[str, frozenset[str]]  # project id -> channel names


def load_project_map(session: Session) -> ProjectMap:
    """Every project's id, slug and channels."""
    ids: dict[str, str] = {}
    channels: dict[str, set[str]] = {}
    for project_id, slug in session.execute(select(Project.id, Project.slug)):
        ids[project_id] = project_id
        ids[slug] = project_id
        channels[project_id] = set()
    for project_id, name in session.execute(select(Channel.project_id, Channel.name)):
        channels.setdefault(project_id, set()).add(name)
    return ProjectMap(ids, {p: frozenset(names) for p, names in channels.items()})


def load_candidates(
    session: Session, project_id: str, channel: str, platform: str
) -> tuple[UpdateRecord, ...]:
    """One channel's and platform's updates (rolled-back ones too), newest first.

    Selection records only: the columns selection reads, without assets or metadata (a Core
    query, no ORM objects), so a long history stays cheap to load and to keep. The served
    update's full record comes from ``load_full_update``.
    """
    query = (
        select(
            Update.id,
            Update.group_id,
            Update.runtime_version,
            Update.created_at,
            Update.kind,
            Update.message,
            Update.rollout,
            Update.mandatory,
            Update.status,
            Update.source_update_id,
        )
        .join(Channel, Update.channel_id == Channel.id)
        .where(
            Update.project_id == project_id,
            Channel.name == channel,
            Channel.paused.is_(False),  # a paused channel serves nothing (issue 17)
            Update.platform == platform,
        )
        .order_by(Update.created_at.desc(), Update.id.desc())
    )
    return tuple(
        UpdateRecord(
            id=row.id,
            group_id=row.group_id,
            project_id=project_id,
            channel=channel,
            platform=platform,
            runtime_version=row.runtime_version,
            created_at=row.created_at,
            kind=cast(UpdateKind, row.kind),
            message=row.message,
            rollout=row.rollout,
            mandatory=row.mandatory,
            status=cast(UpdateStatus, row.status),
            source_update_id=row.source_update_id,
        )
        for row in session.execute(query)
    )


def load_update_ids(session: Session, project_id: str) -> frozenset[str]:
    """The ids of every update of the project (any status)."""
    return frozenset(session.scalars(select(Update.id).where(Update.project_id == project_id)))


def load_pins(session: Session, project_id: str) -> dict[str, str]:
    """The project's device pins: device id -> channel name (issue 19)."""
    rows = session.execute(
        select(DevicePin.device_id, DevicePin.channel).where(DevicePin.project_id == project_id)
    )
    return {device: channel for device, channel in rows}


def load_full_update(session: Session, update_id: str) -> UpdateRecord | None:
    """The complete record (assets, metadata) of one update, None when it is gone."""
    update = session.get(
        Update,
        update_id,
        options=[selectinload(Update.assets), joinedload(Update.channel)],
    )
    return to_record(update) if update is not None else None


def load_signing_key(
    session: Session, project_id: str, keys_dir: Path | None = None
) -> Signer | None:
    """The project's signing identity, None when it does not sign (or its key is unusable).
    A key file is read only from ``keys_dir`` (``signing.read_key_file``): a path stored
    before that rule (another project's key, say) is refused and logged."""
    row = session.get(SigningKey, project_id)
    if row is None:
        return None
    try:
        if row.mode == "publisher":
            return load_publisher_identity(session, row)
        if row.private_key_pem is not None:
            private_pem: bytes = row.private_key_pem.encode()
        elif row.private_key_path is not None:
            if keys_dir is None:
                return None
            private_pem = read_key_file(keys_dir, row.private_key_path)
        else:
            return None
        return load_signing_identity(row.keyid, private_pem, row.certificate_pem)
    except (OSError, SigningError):
        log.exception("the signing key of project %s cannot be used", project_id)
        return None


def load_publisher_identity(session: Session, row: SigningKey) -> PublisherIdentity:
    """A publisher-held project's certificate, its publisher's signatures (by body SHA-256;
    the bodies themselves stay in the database) and the server's timestamp key."""
    query = select(PublisherSignature.body_sha256, PublisherSignature.signature).where(
        PublisherSignature.project_id == row.project_id
    )
    signatures = {digest: signature for digest, signature in session.execute(query)}
    timestamp = None
    if row.timestamp_key_pem and row.timestamp_certificate_pem:
        timestamp = load_signing_identity(
            "timestamp", row.timestamp_key_pem, row.timestamp_certificate_pem
        )
    return PublisherIdentity(
        row.keyid, load_certificate(row.certificate_pem), signatures, timestamp
    )


# ---------------------------------------------------------------- the cache


class DeliveryCache:
    """In-process, revision-checked cache of everything the device endpoints serve."""

    def __init__(
        self,
        engine: Engine,
        sessions: sessionmaker[Session],
        *,
        poll_interval: float,
        signing_keys_dir: Path | None = None,
    ) -> None:
        self._signing_keys_dir = signing_keys_dir
        self._engine = engine
        # Loads only read: a read-only transaction (no write lock taken, none waited for).
        self._sessions = sessionmaker(
            engine.execution_options(readonly=True), expire_on_commit=False
        )
        self._database = database_name(engine)
        self._poll_interval = poll_interval
        # Backoff after failed loads: no load before ``_retry_at`` (monotonic seconds).
        self._failures = 0
        self._retry_at = 0.0
        self._outage_log = ThrottledLog(log)
        self._generation = _Generation()
        self._revision: int | None = None
        self._patch_revision: int | None = None
        self._poller: asyncio.Task[None] | None = None
        # Moves whenever patches were recorded (the patch index's signal to reload).
        self.patch_changes = 0
        # Process-local counters, read by /metrics.
        self.invalidations = 0
        self.hits = 0
        self.misses = 0
        self.stale_answers = 0
        self.failed_loads = 0

    # ------------------------------------------------------------ invalidation

    def invalidate(self) -> None:
        """Forget everything loaded; the next requests load afresh (what was loaded stays as
        the snapshot answered while loads fail)."""
        self._generation = _Generation(snapshot=Snapshot.of(self._generation))
        self.invalidations += 1

    def patches_changed(self) -> None:
        """Signal the patch index that patches were recorded (the delivery cache stays)."""
        self.patch_changes += 1

    def metrics(self) -> dict[str, int]:
        """Extra figures for /metrics (``lumora_delivery_<name>``)."""
        return {
            "patch_changes": self.patch_changes,
            "stale_answers": self.stale_answers,
            "failed_loads": self.failed_loads,
        }

    def watch_local_commits(self) -> None:
        """Invalidate around any commit of this process that bumped the delivery revision, and
        signal ``patches_changed`` around any that bumped the patch revision.

        The engine's ``commit`` event fires just before the database commits, so a request
        racing with it could reload the old state into the fresh generation; invalidating once
        more when the connection goes back to the pool (after the commit) closes that window.
        """

        def on_commit(conn: Any) -> None:
            if conn.info.pop(DELIVERY_BUMPED, False):
                conn.info[_COMMITTED_FLAG] = True
                self.invalidate()
            if conn.info.pop(PATCH_BUMPED, False):
                conn.info[_PATCH_COMMITTED_FLAG] = True
                self.patches_changed()

        def on_rollback(conn: Any) -> None:
            conn.info.pop(DELIVERY_BUMPED, None)
            conn.info.pop(PATCH_BUMPED, None)

        def on_checkin(_dbapi_conn: Any, record: Any) -> None:
            if record is None:
                return
            if record.info.pop(_COMMITTED_FLAG, False):
                self.invalidate()
            if record.info.pop(_PATCH_COMMITTED_FLAG, False):
                self.patches_changed()

        event.listen(self._engine, "commit", on_commit)
        event.listen(self._engine, "rollback", on_rollback)
        event.listen(self._engine.pool, "checkin", on_checkin)

    async def check_revision(self) -> bool:
        """Read both revisions (one query); invalidate when the delivery revision moved, signal
        ``patches_changed`` when the patch revision did. True if the delivery revision moved."""
        revision, patch_revision = await run_in_threadpool(read_revisions, self._engine)
        if patch_revision != self._patch_revision:
            if self._patch_revision is not None:
                self.patches_changed()
            self._patch_revision = patch_revision
        if revision == self._revision:
            return False
        changed = self._revision is not None
        self._revision = revision
        if changed:
            self.invalidate()
        return changed

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                await self.check_revision()
            except Exception as exc:
                # A database hiccup must not kill the poller; keep serving what we have.
                self._outage_log.warning(
                    "poll", "reading the delivery revisions failed: %s", describe(exc)
                )
            else:
                self._outage_log.recovered("poll", "reading the delivery revisions works again")

    async def start(self) -> None:
        """Learn the current revision and start polling it."""
        with contextlib.suppress(Exception):
            await self.check_revision()
        self._poller = asyncio.create_task(self._poll_forever(), name="delivery-cache-poller")

    async def stop(self) -> None:
        """Stop polling."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    # ------------------------------------------------------------ lookups

    def _run_in_session(self, fn: Callable[..., V], *args: Any) -> V:
        with self._sessions() as session:
            return fn(session, *args)

    async def _load_once(
        self,
        generation: _Generation,
        key: Hashable,
        load: Callable[[], Awaitable[V]],
        stale: Callable[[Snapshot | None], tuple[bool, V | None]],
    ) -> V:
        """``await load()``, shared by every concurrent caller with the same key (single flight).

        The load runs as its own task, so a caller that goes away (client disconnect) does not
        cancel it for the others; it stores its result in ``generation`` before finishing.
        When the load fails with a database error, is slow, or the database is being left
        alone after a failure, the answer comes from ``stale(snapshot)`` (found, value), and
        without one the database's unavailability is raised.
        """
        found, old = stale(generation.snapshot)
        if time.monotonic() < self._retry_at:
            return self._stale(found, old, "the database failed moments ago")
        pending = generation.loading.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._after_revision(generation, load))
            generation.loading[key] = pending
            pending.add_done_callback(lambda _done: generation.loading.pop(key, None))
            # Retrieve a failure nobody awaits (the waiter was answered from the snapshot).
            pending.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            if found:
                value = await asyncio.wait_for(asyncio.shield(pending), STALE_AFTER_SECONDS)
            else:
                value = await asyncio.shield(pending)
        except TimeoutError:
            self._outage_log.warning(
                "slow", "%s is slow to answer; devices get the last good answers", self._database
            )
            return self._stale(found, old, "the database is slow")
        except SQLAlchemyError as exc:
            self._load_failed(exc)
            return self._stale(found, old, describe(exc))
        if self._failures:
            self._failures = 0
            self._outage_log.recovered("load", "%s answers again", self._database)
        return cast(V, value)

    async def _after_revision(self, generation: _Generation, load: Callable[[], Awaitable[V]]) -> V:
        """``await load()``, after reading the delivery revision when ``generation`` has none
        yet: read first, it labels everything the generation loads (which is at least as new).
        Concurrent first loads keep the smallest revision read."""
        if generation.revision is None:
            revision, _patches = await run_in_threadpool(read_revisions, self._engine)
            if generation.revision is None or revision < generation.revision:
                generation.revision = revision
        return await load()

    def sequence(self) -> int | None:
        """The delivery revision the current answers were loaded at (from the database, so
        it only grows, across restarts and processes); while loads fail, the snapshot's.
        None before anything was loaded."""
        generation = self._generation
        if generation.revision is not None:
            return generation.revision
        snapshot = generation.snapshot
        return snapshot.revision if snapshot is not None else None

    def _load_failed(self, exc: BaseException) -> None:
        """Count a failed load and leave the database alone for the next backoff period."""
        self.failed_loads += 1
        self._failures += 1
        delay = min(RETRY_MAX_SECONDS, RETRY_MIN_SECONDS * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay
        self._outage_log.warning(
            "load",
            "loading device answers from %s failed (%s); devices get the last good answers, "
            "retrying in %.2f s",
            self._database,
            describe(exc),
            delay,
        )

    def _stale(self, found: bool, value: V | None, reason: str) -> V:
        if not found:
            raise DependencyUnavailable(self._database, reason)
        self.stale_answers += 1
        return cast(V, value)

    async def project_id(self, ref: str) -> str | None:
        """The id of the project whose id or slug is ``ref``, None when there is none."""
        generation = self._generation
        projects = generation.projects
        # Creating a project bumps the revision, so an unknown ref is normally unknown for
        # good: re-read the map for it at most once per poll interval, so devices naming
        # random projects cannot turn the hot path into a database load.
        recheck = time.monotonic() - generation.projects_loaded_at > self._poll_interval
        if projects is None or (ref not in projects.ids and recheck):
            generation.projects_loaded_at = time.monotonic()

            async def load() -> ProjectMap:
                loaded = await run_in_threadpool(self._run_in_session, load_project_map)
                generation.projects = loaded
                return loaded

            def stale(snapshot: Snapshot | None) -> tuple[bool, ProjectMap | None]:
                if projects is not None:  # a ref unknown to the generation's own map
                    return True, projects
                old = snapshot.projects if snapshot is not None else None
                return old is not None, old

            projects = await self._load_once(generation, ("projects",), load, stale)
        return projects.ids.get(ref)

    async def candidates(
        self, project_id: str, channel: str, platform: str, runtime_version: str
    ) -> IndexedCandidates:
        """The channel's updates for ``platform`` whose runtime version matches, newest first.

        Selection records (no assets): pass the one served to ``full_update``.
        """
        generation = self._generation
        runtime_key = (project_id, channel, platform, runtime_version)
        matching = generation.by_runtime.get(runtime_key)
        if matching is not None:
            self.hits += 1
            return matching
        if generation.no_match.get(runtime_key):
            self.hits += 1
            return _NO_CANDIDATES
        self.misses += 1
        projects = generation.projects
        if projects is not None and channel not in projects.channels.get(project_id, ()):
            # Publishing creates the channel and bumps the revision, so a channel missing
            # from the map has no updates; devices naming random channels cost no query.
            return _NO_CANDIDATES
        channel_key = (project_id, channel, platform)
        everything = generation.candidates.get(channel_key)
        if everything is None:

            async def load() -> tuple[UpdateRecord, ...]:
                loaded = await run_in_threadpool(
                    self._run_in_session, load_candidates, project_id, channel, platform
                )
                # Built off the event loop: with thousands of declared ranges the index
                # takes a noticeable fraction of a second (parsing and matching each once).
                index = await run_in_threadpool(RuntimeIndex, loaded)
                generation.runtime_indexes[channel_key] = index
                generation.candidates[channel_key] = loaded
                return loaded

            def stale(snapshot: Snapshot | None) -> tuple[bool, tuple[UpdateRecord, ...] | None]:
                old = snapshot.candidates.get(channel_key) if snapshot is not None else None
                return old is not None, old

            everything = await self._load_once(
                generation, ("candidates", *channel_key), load, stale
            )
            if generation.candidates.get(channel_key) is not everything:
                # An answer from the snapshot: filtered for this request, never remembered,
                # so the first successful load is served at once.
                return IndexedCandidates(
                    u for u in everything if runtime_matches(u.runtime_version, runtime_version)
                )
        matching = generation.by_runtime.get(runtime_key)
        if matching is None:  # another request may have filtered it while we waited
            matching = self._indexed(generation, channel_key, everything, runtime_version)
            if not matching:
                generation.no_match.put(runtime_key, True)
                return matching
            generation.by_runtime.put(runtime_key, matching)
        return matching

    @staticmethod
    def _indexed(
        generation: _Generation,
        channel_key: ChannelKey,
        everything: tuple[UpdateRecord, ...],
        runtime_version: str,
    ) -> IndexedCandidates:
        """The indexed candidates matching ``runtime_version``, shared by equal selections.

        Devices send many runtime versions that match the same updates (a range, or versions
        matching nothing); sharing one index per distinct subset keeps memory bounded by the
        channel's history rather than by what devices send.
        """
        index = generation.runtime_indexes.get(channel_key)
        if index is None:
            index = generation.runtime_indexes[channel_key] = RuntimeIndex(everything)
        positions = index.positions(runtime_version)
        if not positions:
            return _NO_CANDIDATES
        subset_key = (channel_key, hashlib.blake2b(positions.tobytes(), digest_size=16).digest())
        shared = generation.indexed_subsets.get(subset_key)
        if shared is None:
            shared = generation.indexed_subsets.put(
                subset_key, IndexedCandidates(everything[i] for i in positions)
            )
        return shared

    async def full_update(self, update: UpdateRecord) -> UpdateRecord | None:
        """The complete record (assets, metadata) of a candidate; None when it is gone."""
        generation = self._generation
        full = generation.full_updates.get(update.id)
        if full is not None:
            return full

        async def load() -> UpdateRecord | None:
            loaded = await run_in_threadpool(self._run_in_session, load_full_update, update.id)
            if loaded is not None:
                generation.full_updates.put(update.id, loaded)
            return loaded

        def stale(snapshot: Snapshot | None) -> tuple[bool, UpdateRecord | None]:
            old = snapshot.full_updates.get(update.id) if snapshot is not None else None
            return old is not None, old

        return await self._load_once(generation, ("full-update", update.id), load, stale)

    async def signing_identity(self, project_id: str) -> Signer | None:
        """The project's signing identity, None when the project does not sign."""
        generation = self._generation
        if project_id in generation.signing:
            return generation.signing[project_id]

        async def load() -> Signer | None:
            loaded = await run_in_threadpool(
                self._run_in_session, load_signing_key, project_id, self._signing_keys_dir
            )
            generation.signing[project_id] = loaded
            return loaded

        def stale(snapshot: Snapshot | None) -> tuple[bool, Signer | None]:
            if snapshot is None:
                return False, None
            return project_id in snapshot.signing, snapshot.signing.get(project_id)

        return await self._load_once(generation, ("signing", project_id), load, stale)

    async def update_ids(self, project_id: str) -> frozenset[str]:
        """The ids of every update of the project: what device reports may name (statistics
        drop the rest). One query per project and generation."""
        generation = self._generation
        known = generation.update_ids.get(project_id)
        if known is not None:
            return known

        async def load() -> frozenset[str]:
            loaded = await run_in_threadpool(self._run_in_session, load_update_ids, project_id)
            generation.update_ids[project_id] = loaded
            return loaded

        def stale(snapshot: Snapshot | None) -> tuple[bool, frozenset[str] | None]:
            if snapshot is None:
                return False, None
            return project_id in snapshot.update_ids, snapshot.update_ids.get(project_id)

        return await self._load_once(generation, ("update-ids", project_id), load, stale)

    async def pins(self, project_id: str) -> dict[str, str]:
        """The project's device pins (device id -> channel), one query per project and
        generation (pinning bumps the revision). While the database cannot answer, devices
        are served unpinned."""
        generation = self._generation
        known = generation.pins.get(project_id)
        if known is not None:
            return known

        async def load() -> dict[str, str]:
            loaded = await run_in_threadpool(self._run_in_session, load_pins, project_id)
            generation.pins[project_id] = loaded
            return loaded

        def stale(_snapshot: Snapshot | None) -> tuple[bool, dict[str, str] | None]:
            return True, {}

        return await self._load_once(generation, ("pins", project_id), load, stale)

    def known_channel(self, project_id: str, channel: str) -> bool:
        """Whether the project has a channel named ``channel`` (from the project map; True
        before the map is loaded). Statistics file checks of other names under ""."""
        projects = self._generation.projects
        return projects is None or channel in projects.channels.get(project_id, ())

    def shape_memo(self) -> dict[Hashable, Any]:
        """The current generation's memo of answers by request shape: a plain dict (one
        lookup on the hot path), dropped with the generation when the delivery revision moves
        (a publish, rollout change, pin, plan step), so it never outlives the state it was
        computed from. Callers store only answers no device id can change, never answers
        from the snapshot (``stale_answers`` unchanged), and through ``remember_shape``."""
        return self._generation.shapes

    @staticmethod
    def remember_shape(memo: dict[Hashable, Any], key: Hashable, value: Any) -> None:
        """Store ``value`` under ``key`` in ``memo`` (from ``shape_memo``), starting the memo
        over past ``MAX_SHAPES`` entries."""
        if len(memo) >= MAX_SHAPES:
            memo.clear()
        memo[key] = value

    def memoize(self, key: Hashable, build: Callable[[], V]) -> V:
        """``build()``, computed once per key and generation (bodies, signatures)."""
        bodies = self._generation.bodies
        value = bodies.get(key)
        if value is None:
            value = bodies.put(key, build())
        return value  # type: ignore[no-any-return]
