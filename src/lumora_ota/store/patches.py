"""Delta patches: bsdiff patches between launch assets, computed in the background.

After a publish commits, ``schedule_patches`` queues its updates on a one-thread worker. For
each new update the worker diffs the launch assets of the last ``settings.patch_bases``
updates of the same project, channel, platform and runtime version (and of every embedded
bundle registered for that platform and runtime version) toward the new launch asset, with
``bsdiff4`` (classic BSDIFF40: what expo-updates and ``bspatch`` apply).

Each patch is stored once per (base, target) content pair beside the blobs, as
``{target_sha256}.from-{base_sha256}.bsdiff`` (``BlobStore.put_bytes`` is atomic), and then
recorded in ``delta_patches``, one row per (target update, base update), with its size and
whether it is *useful* (below ``settings.patch_max_ratio`` of the brotli size of the full
bundle). Each job covers a batch of updates (a publish's, an embedded registration's stream
heads, a start-up catch-up) and records all its rows in one transaction that bumps the *patch*
revision once (``store.db.bump_patch_revision``), so every server process reloads its patch
index, once per batch. The delivery revision is left alone: patches change neither selection
nor manifests, so the delivery caches (memoized manifests and signatures) stay warm.
Everything is idempotent: a row that exists is skipped, a stored object is reused, so a crash
at any point is repaired by running the job again (``catch_up`` does, at start).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import bsdiff4
from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session, sessionmaker

from lumora_ota.domain.delta import (
    DEFAULT_MAX_BUNDLE_BYTES,
    DEFAULT_MEMORY_BUDGET,
    BaseCandidate,
    is_useful,
    patch_object_name,
    patch_skip_reason,
    select_bases,
)
from lumora_ota.stats import write_counters
from lumora_ota.store.background import BackgroundQueue
from lumora_ota.store.blobs import BlobStore
from lumora_ota.store.db import bump_patch_revision
from lumora_ota.store.models import (
    Blob,
    DeltaPatch,
    EmbeddedBundle,
    Update,
    UpdateAsset,
    utcnow,
)
from lumora_ota.store.repository import KIND_UPDATE, STATUS_ACTIVE, insert_ignore
from lumora_ota.store.variants import ensure_variants, is_compressible

if TYPE_CHECKING:
    from lumora_ota.server.context import AppContext

log = logging.getLogger("lumora_ota.patches")

# Start-up catch-up looks this far back for updates whose patch job may have been lost.
CATCH_UP_WINDOW = timedelta(days=7)
CATCH_UP_LIMIT = 200
VARIANT_WAIT_SECONDS = 120.0
VARIANT_POLL_SECONDS = 0.5
# Rows per INSERT statement when a batch records its patches (7 parameters a row).
RECORD_CHUNK = 500
# The size recorded for a patch that was not computed (a real BSDIFF40 patch has a 32-byte
# header at least): the row marks the pair as done, not useful, and counts in the stats.
SKIPPED_SIZE = 0
SKIPPED_METRIC = "patch_skipped"


@dataclass(frozen=True)
class PatchPolicy:
    """How many bases to diff from and when a patch is worth serving."""

    bases: int = 3
    max_ratio: float = 0.5
    # Bundles larger than this are not diffed, nor pairs whose diff would need more memory
    # than the budget (``domain.delta.patch_skip_reason``): devices get the full bundle.
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
    memory_budget: int = DEFAULT_MEMORY_BUDGET


@dataclass(frozen=True)
class LaunchTarget:
    """The update a job computes patches toward."""

    update_id: str
    project_id: str
    channel_id: str
    platform: str
    runtime_version: str
    sha256: str
    content_type: str
    file_extension: str


def load_target(session: Session, update_id: str) -> LaunchTarget | None:
    """The update and its launch asset; None for a marker or an unknown id."""
    row = session.execute(
        select(Update, UpdateAsset)
        .join(UpdateAsset, and_(UpdateAsset.update_id == Update.id, UpdateAsset.is_launch_asset))
        .where(Update.id == update_id, Update.kind == KIND_UPDATE)
    ).first()
    if row is None:
        return None
    update, launch = row
    return LaunchTarget(
        update_id=update.id,
        project_id=update.project_id,
        channel_id=update.channel_id,
        platform=update.platform,
        runtime_version=update.runtime_version,
        sha256=launch.sha256,
        content_type=launch.content_type,
        file_extension=launch.file_extension,
    )


def base_candidates(session: Session, target: LaunchTarget, limit: int) -> list[BaseCandidate]:
    """The updates to diff from: the newest earlier updates of the target's stream (any
    status — a device may still run a rolled-back update), then every embedded bundle of
    its platform and runtime version."""
    created_at = select(Update.created_at).where(Update.id == target.update_id).scalar_subquery()
    history = session.execute(
        select(Update.id, UpdateAsset.sha256)
        .join(UpdateAsset, and_(UpdateAsset.update_id == Update.id, UpdateAsset.is_launch_asset))
        .where(
            Update.project_id == target.project_id,
            Update.channel_id == target.channel_id,
            Update.platform == target.platform,
            Update.runtime_version == target.runtime_version,
            Update.kind == KIND_UPDATE,
            Update.id != target.update_id,
            Update.created_at <= created_at,
        )
        .order_by(Update.created_at.desc(), Update.id.desc())
        .limit(limit * 8)
    )
    chosen = select_bases(
        (BaseCandidate(update_id, sha) for update_id, sha in history), target.sha256, limit
    )
    embedded = session.execute(
        select(EmbeddedBundle.embedded_update_id, EmbeddedBundle.sha256).where(
            EmbeddedBundle.project_id == target.project_id,
            EmbeddedBundle.platform == target.platform,
            EmbeddedBundle.runtime_version == target.runtime_version,
        )
    )
    chosen.extend(
        BaseCandidate(update_id, sha) for update_id, sha in embedded if sha != target.sha256
    )
    return chosen


def ensure_patch_object(blobs: BlobStore, base_sha256: str, target_sha256: str) -> int:
    """Store the patch from one blob to another unless it is stored; returns its size."""
    name = patch_object_name(target_sha256, base_sha256)
    size = blobs.size(name)
    if size is None:
        patch = bsdiff4.diff(blobs.read_bytes(base_sha256), blobs.read_bytes(target_sha256))
        blobs.put_bytes(name, patch)
        size = len(patch)
    return size


class Stopped(Exception):
    """The worker is shutting down: the job ends here (the next start redoes it)."""


def _blob_sizes(sessions: sessionmaker[Session], sha256: str) -> tuple[int, int | None] | None:
    with sessions() as session:
        blob = session.get(Blob, sha256)
        return None if blob is None else (blob.size, blob.br_size)


def full_bundle_size(
    blobs: BlobStore,
    sessions: sessionmaker[Session],
    target: LaunchTarget,
    *,
    variant_wait: float = VARIANT_WAIT_SECONDS,
    stop: Callable[[], bool] | None = None,
) -> int:
    """What a device downloads without a patch: the brotli variant's size, or the raw size
    when the bundle has none.

    The variant worker compresses the bundle after the same publish; brotli at its best
    quality takes seconds, so we wait for it (bounded) rather than compress twice, and
    compress ourselves only when it never comes (that worker failed or is not running).
    Raises ``Stopped`` when ``stop()`` turns true while waiting.
    """
    sizes = _blob_sizes(sessions, target.sha256)
    if sizes is None:
        return 0
    if not is_compressible(target.content_type, target.file_extension):
        return sizes[0]
    deadline = time.monotonic() + variant_wait
    while sizes[1] is None and time.monotonic() < deadline:
        if stop is not None and stop():
            raise Stopped
        time.sleep(VARIANT_POLL_SECONDS)
        sizes = _blob_sizes(sessions, target.sha256) or sizes
    if sizes[1] is None:
        ensure_variants(blobs, sessions, target.sha256)  # idempotent
        sizes = _blob_sizes(sessions, target.sha256) or sizes
    raw_size, br_size = sizes
    return br_size if br_size is not None else raw_size


def plan_patches(
    blobs: BlobStore,
    sessions: sessionmaker[Session],
    policy: PatchPolicy,
    update_id: str,
    *,
    stop: Callable[[], bool] | None = None,
    variant_wait: float = VARIANT_WAIT_SECONDS,
) -> list[dict[str, Any]]:
    """Store the patch objects toward one update that has none recorded from some base yet;
    returns the ``delta_patches`` rows to record (none for a marker or when all are there)."""
    with sessions() as session:
        session.connection(execution_options={"readonly": True})
        target = load_target(session, update_id)
        if target is None:
            return []
        bases = base_candidates(session, target, policy.bases)
        done = set(
            session.scalars(
                select(DeltaPatch.base_update_id).where(DeltaPatch.target_update_id == update_id)
            )
        )
    todo = [b for b in bases if b.update_id not in done]
    if not todo:
        return []
    sizes = {b.launch_sha256: 0 for b in todo}
    target_size = (_blob_sizes(sessions, target.sha256) or (0, None))[0]
    for base_sha in sizes:
        if stop is not None and stop():
            raise Stopped
        base_size = (_blob_sizes(sessions, base_sha) or (0, None))[0]
        reason = patch_skip_reason(
            base_size,
            target_size,
            max_bundle_bytes=policy.max_bundle_bytes,
            memory_budget=policy.memory_budget,
        )
        if reason is not None:
            log.warning(
                "no patch from %s to %s (%d and %d bytes): %s",
                base_sha[:12],
                target.sha256[:12],
                base_size,
                target_size,
                reason,
            )
            sizes[base_sha] = SKIPPED_SIZE
            continue
        sizes[base_sha] = ensure_patch_object(blobs, base_sha, target.sha256)
    full = full_bundle_size(blobs, sessions, target, stop=stop, variant_wait=variant_wait)
    now = utcnow()
    return [
        {
            "target_update_id": target.update_id,
            "base_update_id": base.update_id,
            "base_sha256": base.launch_sha256,
            "target_sha256": target.sha256,
            "size": sizes[base.launch_sha256],
            "useful": sizes[base.launch_sha256] != SKIPPED_SIZE
            and is_useful(sizes[base.launch_sha256], full, policy.max_ratio),
            "created_at": now,
            "project_id": target.project_id,
        }
        for base in todo
    ]


def record_patches(sessions: sessionmaker[Session], rows: list[dict[str, Any]]) -> int:
    """Record patch rows (existing ones are skipped) and bump the patch revision once, in one
    transaction; nothing at all when there are no rows. Returns how many rows were given."""
    if not rows:
        return 0
    skipped = Counter(
        (row["project_id"], "", row["target_update_id"], row["created_at"].date(), SKIPPED_METRIC)
        for row in rows
        if row["size"] == SKIPPED_SIZE
    )
    table_rows = [{k: v for k, v in row.items() if k != "project_id"} for row in rows]
    with sessions() as session:
        for start in range(0, len(rows), RECORD_CHUNK):  # bounded statement parameters
            insert_ignore(session, DeltaPatch, table_rows[start : start + RECORD_CHUNK])
        # Skipped pairs are noted in the statistics (GET /updates/{id}/delta: patchesSkipped).
        write_counters(session.connection(), skipped)
        bump_patch_revision(session)
        session.commit()
    return len(rows)


def compute_patches(
    blobs: BlobStore,
    sessions: sessionmaker[Session],
    policy: PatchPolicy,
    update_ids: Iterable[str],
    *,
    stop: Callable[[], bool] | None = None,
    variant_wait: float = VARIANT_WAIT_SECONDS,
) -> int:
    """Compute and record the patches toward a batch of updates; returns how many rows it
    added. ``variant_wait``: see ``full_bundle_size``.

    The rows of the whole batch are recorded together, with a single patch-revision bump
    (none when nothing was added), so server processes reload their patch index once per
    batch. An update whose patches cannot be computed is logged and skipped: a lost patch only
    costs bandwidth (devices get the full bundle), and the rest of the batch still counts.
    When ``stop()`` turns true (shutdown) the updates not started are left for the next
    catch-up, and what was computed so far is recorded.
    """
    batch = list(dict.fromkeys(update_ids))  # each once, in order
    rows: list[dict[str, Any]] = []
    for update_id in batch:
        if stop is not None and stop():
            break
        try:
            rows.extend(
                plan_patches(
                    blobs, sessions, policy, update_id, stop=stop, variant_wait=variant_wait
                )
            )
        except Stopped:
            break
        except Exception:
            log.exception("computing patches toward update %s failed", update_id)
    added = record_patches(sessions, rows)
    if added:
        targets = len({row["target_update_id"] for row in rows})
        log.info("recorded %d patch(es) toward %d update(s)", added, targets)
    return added


def stream_heads(
    session: Session, project_id: str, platform: str, runtime_version: str
) -> list[str]:
    """The newest active update of each channel for one platform and runtime version: what
    a fresh install of a build would be offered first."""
    rows = session.execute(
        select(Update.id, Update.channel_id)
        .where(
            Update.project_id == project_id,
            Update.platform == platform,
            Update.runtime_version == runtime_version,
            Update.kind == KIND_UPDATE,
            Update.status == STATUS_ACTIVE,
        )
        .order_by(Update.created_at.desc(), Update.id.desc())
    )
    heads: dict[str, str] = {}
    for update_id, channel_id in rows:
        heads.setdefault(channel_id, update_id)
    return list(heads.values())


def updates_without_patches(session: Session, limit: int = CATCH_UP_LIMIT) -> list[str]:
    """Recent active updates with no patch row yet: their job may have been lost in a
    crash (those without any base are cheap to re-check)."""
    since = utcnow() - CATCH_UP_WINDOW
    return list(
        session.scalars(
            select(Update.id)
            .where(
                Update.kind == KIND_UPDATE,
                Update.status == STATUS_ACTIVE,
                Update.created_at >= since,
                ~exists().where(DeltaPatch.target_update_id == Update.id),
            )
            .order_by(Update.created_at.desc())
            .limit(limit)
        )
    )


class PatchWorker:
    """Computes patches on one background thread; jobs are idempotent, so duplicates (two
    processes, a catch-up racing a publish) only cost time."""

    def __init__(
        self, blobs: BlobStore, sessions: sessionmaker[Session], policy: PatchPolicy
    ) -> None:
        self._blobs = blobs
        self._sessions = sessions
        self._policy = policy
        self._executor = BackgroundQueue("patches")
        self._stopping = threading.Event()

    def submit(self, update_ids: Iterable[str]) -> Future[int]:
        """Queue one patch job for this batch of updates (a repeated job finds its work done);
        its result is how many rows it added."""
        return self._executor.submit(self._run, list(update_ids), VARIANT_WAIT_SECONDS)

    def submit_embedded(self, project_id: str, platform: str, runtime_version: str) -> Future[int]:
        """Queue one job for the updates a fresh install of a newly registered build gets."""
        with self._sessions() as session:
            heads = stream_heads(session, project_id, platform, runtime_version)
        return self.submit(heads)

    def catch_up(self) -> Future[int]:
        """Queue one job for recent updates that have no patch rows (after a crash)."""
        with self._sessions() as session:
            session.connection(execution_options={"readonly": True})
            pending = updates_without_patches(session)
        # No variant worker of this process is compressing these bundles (their publish was
        # before the start): compress here at once instead of waiting for it in vain.
        return self._executor.submit(self._run, pending, 0.0)

    def _run(self, update_ids: list[str], variant_wait: float) -> int:
        if not update_ids:
            return 0
        try:
            return compute_patches(
                self._blobs,
                self._sessions,
                self._policy,
                update_ids,
                stop=self._stopping.is_set,
                variant_wait=variant_wait,
            )
        except Exception:
            # A lost patch only costs bandwidth: devices get the full bundle.
            log.exception("recording patches toward updates %s failed", update_ids)
            return 0

    def shutdown(self) -> None:
        """Stop, dropping queued work and the rest of the running batch (``catch_up`` redoes
        it at the next start); a diff under way is not waited for (``store.background``)."""
        self._stopping.set()
        self._executor.shutdown()


def schedule_patches(ctx: AppContext, update_ids: Iterable[str]) -> Future[int] | None:
    """Queue one patch job for freshly committed updates (call after the commit, never
    before: the worker reads them from the database). None when no worker is installed."""
    return ctx.patch_worker.submit(update_ids)
