"""The md5 of every stored blob: the manifest ``key`` of an asset.

expo-updates stores each downloaded asset under its manifest ``key`` and exposes them to
JavaScript as ``localAssets`` by that key; expo-asset looks images and fonts up there by
Metro's asset hash, the md5 of the file (also its name under ``assets/`` in an export and what
Expo's reference server sends). Any other key leaves new or changed assets unresolved on
devices. The server holds the bytes, so it computes the md5 itself: while an upload streams
in (``Md5Tap``), or from the stored bytes for blobs that predate the column
(``fill_missing_md5``: migration 0003, server start, and publish for any blob still lacking
one). It never trusts a client's claim.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Collection

from sqlalchemy import Connection, select, update

from lumora_ota.store.blobs import BlobError, BlobStore
from lumora_ota.store.db import DELIVERY_BUMPED
from lumora_ota.store.models import Blob, DeliveryState, UpdateAsset

log = logging.getLogger("lumora_ota.digests")


class Md5Tap:
    """Passes an upload's chunks through and keeps their md5 (``hexdigest`` once consumed)."""

    def __init__(self, body: AsyncIterator[bytes]) -> None:
        self._body = body
        self._md5 = hashlib.md5(usedforsecurity=False)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The chunks of the wrapped body, unchanged."""
        async for chunk in self._body:
            self._md5.update(chunk)
            yield chunk

    def hexdigest(self) -> str:
        """The md5 of everything passed so far (lowercase hex)."""
        return self._md5.hexdigest()


def md5_of_blob(blobs: BlobStore, sha256: str) -> str | None:
    """The md5 of a stored blob, or None when the store lacks it."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        for chunk in blobs.open_read(sha256):
            digest.update(chunk)
    except (BlobError, FileNotFoundError, OSError):
        return None
    return digest.hexdigest()


def fill_missing_md5(
    conn: Connection, blobs: BlobStore, sha256s: Collection[str] | None = None
) -> int:
    """Compute ``blobs.md5`` where it is missing and copy it to the ``update_assets`` rows of
    those blobs that lack it; bumps the delivery revision when any manifest changes.

    With ``sha256s`` (a publish) only those blobs are looked at, and only their rows fixed;
    without (migration, server start) every blob and row, after a cheap probe finds work.
    Runs inside the caller's transaction; returns the asset rows fixed.
    """
    query = select(Blob.sha256).where(Blob.md5.is_(None))
    if sha256s is not None:
        if not sha256s:
            return 0
        query = query.where(Blob.sha256.in_(sorted(set(sha256s))))
    computed: dict[str, str] = {}
    for sha256 in conn.execute(query).scalars().all():
        md5 = md5_of_blob(blobs, sha256)
        if md5 is None:
            log.warning("blob %s is not in the store; its assets keep a sha256-based key", sha256)
            continue
        conn.execute(update(Blob).where(Blob.sha256 == sha256).values(md5=md5))
        computed[sha256] = md5
    fixed = 0
    if sha256s is not None:
        for sha256, md5 in computed.items():
            fixed += conn.execute(
                update(UpdateAsset)
                .where(UpdateAsset.sha256 == sha256, UpdateAsset.md5.is_(None))
                .values(md5=md5)
            ).rowcount
    else:
        probe = select(UpdateAsset.id).where(UpdateAsset.md5.is_(None)).limit(1)
        if conn.execute(probe).first() is not None:
            known = select(Blob.md5).where(Blob.sha256 == UpdateAsset.sha256).scalar_subquery()
            fixed = conn.execute(
                update(UpdateAsset)
                .where(UpdateAsset.md5.is_(None))
                .where(UpdateAsset.sha256.in_(select(Blob.sha256).where(Blob.md5.is_not(None))))
                .values(md5=known)
                .execution_options(synchronize_session=False)
            ).rowcount
    if fixed:
        conn.execute(
            update(DeliveryState)
            .where(DeliveryState.id == 1)
            .values(revision=DeliveryState.revision + 1)
        )
        conn.info[DELIVERY_BUMPED] = True  # this process's delivery cache reloads at commit
    return int(fixed or 0)
