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
from sqlalchemy.orm import Session, joinedload, selectinload, sessionmaker
from starlette.concurrency import run_in_threadpool

from lumora_ota.domain.model import UpdateKind, UpdateRecord, UpdateStatus
from lumora_ota.domain.runtime import runtime_matches
from lumora_ota.domain.selection import IndexedCandidates
from lumora_ota.signing import (
    SigningError,
    SigningIdentity,
    load_signing_identity,
    read_key_file,
)
from lumora_ota.store.db import DELIVERY_BUMPED, PATCH_BUMPED, read_revisions
from lumora_ota.store.models import Channel, Project, SigningKey, Update
from lumora_ota.store.repository import to_record

log = logging.getLogger("lumora_ota.delivery")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Bounds on what devices can make us remember: each distinct runtime version a device sends
# (ranges accept many) gets a filtered candidate list and its own manifest bodies.
MAX_RUNTIME_LISTS = 4096
MAX_BODIES = 8192
# Full records (with assets) of served updates: devices are served a channel's newest few.
MAX_FULL_UPDATES = 512
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


ChannelKey = tuple[str, str, str]  # project id, channel, platform
_NO_CANDIDATES = IndexedCandidates(())


@dataclass
class _Generation:
    """Everything loaded since the last invalidation."""

    projects: ProjectMap | None = None
    projects_loaded_at: float = 0.0
    candidates: dict[ChannelKey, tuple[UpdateRecord, ...]] = field(default_factory=dict)
    by_runtime: BoundedCache[tuple[str, str, str, str], IndexedCandidates] = field(
        default_factory=lambda: BoundedCache(MAX_RUNTIME_LISTS)
    )
    indexed_subsets: BoundedCache[tuple[ChannelKey, bytes], IndexedCandidates] = field(
        default_factory=lambda: BoundedCache(MAX_RUNTIME_LISTS)
    )
    full_updates: BoundedCache[str, UpdateRecord] = field(
        default_factory=lambda: BoundedCache(MAX_FULL_UPDATES)
    )
    signing: dict[str, SigningIdentity | None] = field(default_factory=dict)
    bodies: BoundedCache[Hashable, Any] = field(default_factory=lambda: BoundedCache(MAX_BODIES))
    # Loads in flight, by key: concurrent misses share one (single flight).
    loading: dict[Hashable, asyncio.Future[Any]] = field(default_factory=dict)


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
) -> SigningIdentity | None:
    """The project's signing identity, None when it does not sign (or its key is unusable).
    A key file is read only from ``keys_dir`` (``signing.read_key_file``): a path stored
    before that rule (another project's key, say) is refused and logged."""
    row = session.get(SigningKey, project_id)
    if row is None:
        return None
    try:
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
        self._sessions = sessions
        self._poll_interval = poll_interval
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

    # ------------------------------------------------------------ invalidation

    def invalidate(self) -> None:
        """Forget everything loaded; the next requests load afresh."""
        self._generation = _Generation()
        self.invalidations += 1

    def patches_changed(self) -> None:
        """Signal the patch index that patches were recorded (the delivery cache stays)."""
        self.patch_changes += 1

    def metrics(self) -> dict[str, int]:
        """Extra figures for /metrics (``lumora_delivery_<name>``)."""
        return {"patch_changes": self.patch_changes}

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
            except Exception:
                # A database hiccup must not kill the poller; keep serving what we have.
                log.warning("reading the delivery revisions failed", exc_info=True)

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
        self, generation: _Generation, key: Hashable, load: Callable[[], Awaitable[V]]
    ) -> V:
        """``await load()``, shared by every concurrent caller with the same key (single flight).

        The load runs as its own task, so a caller that goes away (client disconnect) does not
        cancel it for the others; it stores its result in ``generation`` before finishing.
        """
        pending = generation.loading.get(key)
        if pending is None:
            pending = asyncio.ensure_future(load())
            generation.loading[key] = pending
            pending.add_done_callback(lambda _done: generation.loading.pop(key, None))
        return cast(V, await asyncio.shield(pending))

    async def project_id(self, ref: str) -> str | None:
        """The id of the project whose id or slug is ``ref``, None when there is none."""
        generation = self._generation
        projects = generation.projects
        # Creating a project bumps the revision, so an unknown ref is normally unknown for
        # good: re-read the map for it at most once per poll interval, so devices naming
        # random projects cannot turn the hot path into a database load.
        stale = time.monotonic() - generation.projects_loaded_at > self._poll_interval
        if projects is None or (ref not in projects.ids and stale):
            generation.projects_loaded_at = time.monotonic()

            async def load() -> ProjectMap:
                loaded = await run_in_threadpool(self._run_in_session, load_project_map)
                generation.projects = loaded
                return loaded

            projects = await self._load_once(generation, ("projects",), load)
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
                generation.candidates[channel_key] = loaded
                return loaded

            everything = await self._load_once(generation, ("candidates", *channel_key), load)
        matching = generation.by_runtime.get(runtime_key)
        if matching is None:  # another request may have filtered it while we waited
            matching = generation.by_runtime.put(
                runtime_key, self._indexed(generation, channel_key, everything, runtime_version)
            )
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
        positions = array(
            "I",
            (
                i
                for i, u in enumerate(everything)
                if runtime_matches(u.runtime_version, runtime_version)
            ),
        )
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

        return await self._load_once(generation, ("full-update", update.id), load)

    async def signing_identity(self, project_id: str) -> SigningIdentity | None:
        """The project's signing identity, None when the project does not sign."""
        generation = self._generation
        if project_id in generation.signing:
            return generation.signing[project_id]

        async def load() -> SigningIdentity | None:
            loaded = await run_in_threadpool(
                self._run_in_session, load_signing_key, project_id, self._signing_keys_dir
            )
            generation.signing[project_id] = loaded
            return loaded

        return await self._load_once(generation, ("signing", project_id), load)

    def memoize(self, key: Hashable, build: Callable[[], V]) -> V:
        """``build()``, computed once per key and generation (bodies, signatures)."""
        bodies = self._generation.bodies
        value = bodies.get(key)
        if value is None:
            value = bodies.put(key, build())
        return value  # type: ignore[no-any-return]
