"""Delta-update negotiation on the launch-asset request (expo-updates 55 to 57 wire protocol).

``negotiate_patch`` is called first by the asset route. A request with ``A-IM: bsdiff``,
``Expo-Current-Update-ID`` (the base: an update or registered embedded build of the same
project) and ``Expo-Requested-Update-ID`` (still served, with this launch asset) gets
``226 IM Used`` with ``im: bsdiff``, ``expo-base-update-id``, ``cache-control: private,
no-store``, ``vary: A-IM, Expo-Current-Update-ID`` and the BSDIFF40 body, when a useful
patch between the two launch assets is stored (looked up by content, so promoted and
re-published copies of an update are patched too). Everything else
returns None: the route serves the full asset as usual (``full_asset_vary`` gives its
``vary``). The rules themselves are pure (``domain.delta.decide``).

No database query per request in steady state: a ``PatchIndex`` (served launch assets, their
patches, their sizes) is loaded once and reloaded when

* patches were recorded: the patch worker bumps the *patch revision*, which the delivery
  cache reads in the same poll as the delivery revision and notices on local commits, and
  signals through its ``patch_changes`` counter without dropping anything of its own;
* the delivery cache is invalidated (its ``invalidations`` counter moves): updates published,
  rolled back or promoted change which launch assets are served and which are patch bases.

Patch bodies are small and kept in a byte-bounded memory cache, so a URL store (S3) is read
once per patch, not redirected to (a redirect would lose the ``im``/``expo-base-update-id``
headers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from sqlalchemy import and_, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from lumora_ota.domain.delta import (
    BSDIFF,
    LAUNCH_ASSET_VARY,
    PATCH_VARY,
    Decision,
    LaunchRef,
    Outcome,
    PatchEntry,
    PatchIndexView,
    PatchRequest,
    decide,
    patch_object_name,
)
from lumora_ota.server.context import AppContext
from lumora_ota.server.device.memory import BytesLRU
from lumora_ota.server.device.negotiation import acceptable_encodings
from lumora_ota.store.blobs import VARIANTS, BlobStore
from lumora_ota.store.models import Blob, Channel, DeltaPatch, EmbeddedBundle, Update, UpdateAsset
from lumora_ota.store.repository import KIND_UPDATE, STATUS_ACTIVE

log = logging.getLogger("lumora_ota.delta")

PATCH_STATUS = 226  # IM Used (RFC 3229)
PATCH_CACHE_CONTROL = "private, no-store"
DEFAULT_VARY = "accept-encoding"
MAX_BODY_CACHE_BYTES = 64 * 1024 * 1024
MAX_LOOKED_UP = 10_000  # database answers kept per snapshot (``PatchIndex.is_published``)
UNPUBLISHED_TTL = 1.0  # seconds a "not published" answer from the database is reused


@dataclass(frozen=True, slots=True)
class ServedLaunch:
    """An update still served, with what its full launch asset costs a device."""

    project_id: str
    channel: str
    sha256: str
    sizes: dict[str, int]  # "identity", and "br"/"gzip" when stored


@dataclass
class IndexSnapshot:
    """Everything negotiation needs, loaded in one go."""

    launches: dict[str, ServedLaunch] = field(default_factory=dict)
    view: PatchIndexView = field(default_factory=lambda: PatchIndexView({}, {}, {}))
    launch_shas: frozenset[str] = frozenset()
    # Every file some update (any status) references: only these are served by hash.
    published: frozenset[str] = frozenset()
    # Hashes looked up in the database since this snapshot was loaded (``is_published``).
    looked_up: dict[str, tuple[bool, float]] = field(default_factory=dict)


def load_snapshot(session: Session) -> IndexSnapshot:
    """Served (active) updates' launch assets with their sizes, every update's and embedded
    build's launch asset (patch bases), and the stored patches by content pair. Launch assets
    of rolled-back updates count for ``vary`` too (a URL's answers must agree)."""
    launches: dict[str, ServedLaunch] = {}
    served: dict[str, LaunchRef] = {}
    bases: dict[tuple[str, str], LaunchRef] = {}
    launch_rows = session.execute(
        select(
            Update.id,
            Update.status,
            Update.project_id,
            Channel.name,
            UpdateAsset.sha256,
            Blob.size,
            Blob.br_size,
            Blob.gzip_size,
        )
        .join(Channel, Channel.id == Update.channel_id)
        .join(UpdateAsset, and_(UpdateAsset.update_id == Update.id, UpdateAsset.is_launch_asset))
        .join(Blob, Blob.sha256 == UpdateAsset.sha256)
        .where(Update.kind == KIND_UPDATE)
    )
    for update_id, status, project_id, channel, sha, raw, br, gz in launch_rows:
        ref = LaunchRef(project_id, sha)
        bases[(project_id, update_id)] = ref
        if status != STATUS_ACTIVE:
            continue
        served[update_id] = ref
        sizes = {"identity": raw}
        if br is not None:
            sizes["br"] = br
        if gz is not None:
            sizes["gzip"] = gz
        launches[update_id] = ServedLaunch(project_id, channel, sha, sizes)
    launch_shas = frozenset(ref.sha256 for ref in bases.values())
    for project_id, embedded_id, sha in session.execute(
        select(EmbeddedBundle.project_id, EmbeddedBundle.embedded_update_id, EmbeddedBundle.sha256)
    ):
        bases.setdefault((project_id, embedded_id), LaunchRef(project_id, sha))
    patches: dict[tuple[str, str], PatchEntry] = {}
    for target_sha, base_sha, size, useful in session.execute(
        select(
            DeltaPatch.target_sha256, DeltaPatch.base_sha256, DeltaPatch.size, DeltaPatch.useful
        ).distinct()
    ):
        known = patches.get((base_sha, target_sha))
        if known is None or (useful and not known.useful):
            patches[(base_sha, target_sha)] = PatchEntry(target_sha, base_sha, size, useful)
    published = frozenset(session.execute(select(UpdateAsset.sha256).distinct()).scalars())
    return IndexSnapshot(
        launches, PatchIndexView(served, bases, patches), launch_shas, published=published
    )


class PatchBodies:
    """Patch bytes by object name, least recently used dropped past ``limit`` bytes."""

    def __init__(self, blobs: BlobStore, limit: int = MAX_BODY_CACHE_BYTES) -> None:
        self._blobs = blobs
        self._items: BytesLRU[str, bytes] = BytesLRU(limit)

    async def get(self, name: str) -> bytes | None:
        """The object's bytes (read once from the store), None when it cannot be read."""
        body = self._items.get(name)
        if body is not None:
            return body
        try:
            body = await run_in_threadpool(self._blobs.read_bytes, name)
        except Exception:
            log.warning("patch object %s cannot be read", name, exc_info=True)
            return None
        self._items.put(name, body, len(body))
        return body


class PatchIndex:
    """The in-memory snapshot, reloaded after each delivery-cache invalidation and each change
    of the patch revision."""

    def __init__(
        self, sessions: sessionmaker[Session], blobs: BlobStore, delivery: Any | None
    ) -> None:
        self._sessions = sessions
        self._delivery = delivery
        self._snapshot: IndexSnapshot | None = None
        self._token: tuple[int, int] = (-1, -1)
        self._lock = asyncio.Lock()
        self.bodies = PatchBodies(blobs)
        self.loads = 0

    def _current_token(self) -> tuple[int, int]:
        if self._delivery is None:  # no delivery cache (not in the app): reload every second
            return int(time.monotonic()), 0
        return int(self._delivery.invalidations), int(self._delivery.patch_changes)

    def _load(self) -> IndexSnapshot:
        with self._sessions() as session:
            session.connection(execution_options={"readonly": True})
            return load_snapshot(session)

    async def snapshot(self) -> IndexSnapshot:
        """The current snapshot, loaded (in a worker thread) when stale."""
        snapshot = self._snapshot
        if snapshot is not None and self._token == self._current_token():
            return snapshot
        async with self._lock:
            token = self._current_token()
            if self._snapshot is None or self._token != token:
                # The token is read before loading: an invalidation during the load makes
                # the next request load again.
                self._snapshot = await run_in_threadpool(self._load)
                self._token = token
                self.loads += 1
            return self._snapshot

    async def is_published(self, sha256: str) -> bool:
        """Whether some update references this stored file, so it may be served by hash.

        Known from the snapshot; a hash it lacks (published by another process since the
        last reload) is looked up in the database. A yes holds for the snapshot's life, a
        no for ``UNPUBLISHED_TTL`` seconds, so a client repeating a stored, unpublished
        hash costs at most one query per hash that often. Callers ask only about files
        that exist, so random hashes never reach the database.
        """
        snapshot = await self.snapshot()
        if sha256 in snapshot.published:
            return True
        now = time.monotonic()
        known = snapshot.looked_up.get(sha256)
        if known is not None and (known[0] or now - known[1] < UNPUBLISHED_TTL):
            return known[0]
        if len(snapshot.looked_up) >= MAX_LOOKED_UP:
            snapshot.looked_up.clear()
        found = await run_in_threadpool(self._references, sha256)
        snapshot.looked_up[sha256] = (found, now)
        return found

    def _references(self, sha256: str) -> bool:
        with self._sessions() as session:
            session.connection(execution_options={"readonly": True})
            found = session.execute(
                select(UpdateAsset.id).where(UpdateAsset.sha256 == sha256).limit(1)
            ).first()
            return found is not None

    def loaded(self) -> IndexSnapshot | None:
        """The last snapshot, stale or not (for cheap synchronous header decisions)."""
        return self._snapshot


def patch_index(ctx: AppContext) -> PatchIndex:
    """The process's ``PatchIndex`` (made by ``create_app``)."""
    return ctx.patches


def patch_request(request: Request, sha256: str) -> PatchRequest:
    """The negotiation-relevant headers of an asset request."""
    headers = request.headers
    embedded = headers.get("expo-embedded-update-id")
    return PatchRequest(
        asset_sha256=sha256,
        a_im=headers.get("a-im"),
        # A client on its embedded bundle may omit the current id: the base is the embedded.
        current_update_id=headers.get("expo-current-update-id") or embedded,
        requested_update_id=headers.get("expo-requested-update-id"),
        embedded_update_id=embedded,
    )


def full_download_size(launch: ServedLaunch, accept_encoding: str | None) -> tuple[str, int]:
    """The representation the asset route would send instead, and its size."""
    for encoding in acceptable_encodings(accept_encoding, tuple(VARIANTS)):
        if encoding in launch.sizes:
            return encoding, launch.sizes[encoding]
    return "identity", launch.sizes["identity"]


def _record(ctx: AppContext, launch: ServedLaunch, update_id: str, metric: str, n: int) -> None:
    if n > 0:
        ctx.stats.record_update_counter(
            project_id=launch.project_id,
            channel=launch.channel,
            update_id=update_id,
            metric=metric,
            value=n,
        )


def _record_full(
    ctx: AppContext, request: Request, snapshot: IndexSnapshot, req: PatchRequest
) -> None:
    """Count what compression saves on a full launch-asset download of a known update."""
    launch = snapshot.launches.get(req.requested_update_id or "")
    if launch is None or launch.sha256 != req.asset_sha256:
        return
    encoding, size = full_download_size(launch, request.headers.get("accept-encoding"))
    if encoding != "identity":
        saved = launch.sizes["identity"] - size
        _record(ctx, launch, req.requested_update_id or "", "compression_bytes_saved", saved)


def patch_response(body: bytes, base_update_id: str) -> Response:
    """The 226 answer carrying a BSDIFF40 patch."""
    return Response(
        content=body,
        status_code=PATCH_STATUS,
        media_type="application/octet-stream",
        headers={
            "im": BSDIFF,
            "expo-base-update-id": base_update_id,
            "cache-control": PATCH_CACHE_CONTROL,
            "vary": PATCH_VARY,
            "x-content-type-options": "nosniff",
        },
    )


async def negotiate_patch(ctx: AppContext, request: Request, sha256: str) -> Response | None:
    """A patch answer for this asset request, or None to serve the full asset.

    Only plain GETs negotiate (a HEAD or a Range request gets the full asset's answer).
    """
    index = patch_index(ctx)
    # Loaded for every asset request (once per delivery generation), so ``full_asset_vary``
    # answers the same for a URL whichever request came first.
    snapshot = await index.snapshot()
    if request.method != "GET" or "range" in request.headers:
        return None
    req = patch_request(request, sha256)
    if req.requested_update_id is None:
        return None  # not a launch-asset request of an expo-updates client: nothing to do
    decision: Decision = decide(req, snapshot.view)
    if decision.outcome is not Outcome.PATCH or decision.patch is None:
        _record_full(ctx, request, snapshot, req)
        return None
    entry = decision.patch
    body = await index.bodies.get(patch_object_name(entry.target_sha256, entry.base_sha256))
    if body is None or len(body) != entry.size:
        _record_full(ctx, request, snapshot, req)
        return None
    launch = snapshot.launches[req.requested_update_id]
    _, full_size = full_download_size(launch, request.headers.get("accept-encoding"))
    requested = req.requested_update_id
    _record(ctx, launch, requested, "patch_bytes_saved", full_size - len(body))
    _record(ctx, launch, requested, "patch_downloads", 1)
    ctx.stats.record_asset(nbytes=len(body), variant="patch")
    return patch_response(body, decision.base_update_id or "")


def full_asset_vary(ctx: AppContext, sha256: str) -> str:
    """The ``vary`` of a full-asset answer: launch assets (which a patch could replace) vary
    on ``A-IM`` and ``Expo-Current-Update-ID`` too, so caches never mix the two answers."""
    snapshot = ctx.patches.loaded()
    if snapshot is not None and sha256 in snapshot.launch_shas:
        return LAUNCH_ASSET_VARY
    return DEFAULT_VARY
