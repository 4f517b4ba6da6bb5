"""Precomputed compressed variants (brotli, gzip) of compressible blobs.

Devices ask for assets with ``accept-encoding``; compressing a multi-megabyte bundle at
brotli quality 11 per request would be far too slow, so each compressible blob is compressed
once, after the publish that uses it commits, on a background thread. A variant is stored
(``variant_name(sha, "br")``) only when it saves at least 5%; its size goes into
``Blob.br_size`` / ``Blob.gzip_size``, which the delivery side reads to know it exists.
"""

from __future__ import annotations

import gzip
import logging
import threading
from collections.abc import Iterable
from concurrent.futures import Future

import brotli
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from lumora_ota.store.background import BackgroundQueue
from lumora_ota.store.blobs import BlobError, BlobStore, variant_name
from lumora_ota.store.models import Blob

log = logging.getLogger("lumora_ota.variants")

BROTLI_MAX_QUALITY_BYTES = 4 * 1024 * 1024
WORTHWHILE_RATIO = 0.95

_COMPRESSIBLE_TYPES = frozenset(
    {
        "application/javascript",
        "application/x-javascript",
        "application/json",
        "application/manifest+json",
        "application/xml",
        "application/wasm",
        "application/octet-stream",
        "application/vnd.facebook.hermes-bytecode",
        "image/svg+xml",
        "image/bmp",
        "font/ttf",
        "font/otf",
        "application/x-font-ttf",
        "application/x-font-otf",
        "application/vnd.ms-fontobject",
        # font collections/sfnt and icons (uncompressed bitmaps) also shrink well (#10)
        "font/collection",
        "font/sfnt",
        "application/font-sfnt",
        "image/x-icon",
        "image/vnd.microsoft.icon",
    }
)
_COMPRESSIBLE_EXTENSIONS = frozenset(
    {".js", ".mjs", ".hbc", ".bundle", ".json", ".map", ".svg", ".txt", ".html", ".css",
     ".xml", ".wasm", ".ttf", ".otf", ".eot", ".bmp", ".csv", ".ttc", ".ico", ".jsbundle"}
)  # fmt: skip
# Formats that are already compressed; compressing them again wastes time for nothing.
_INCOMPRESSIBLE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".gif", ".avif", ".heic", ".woff", ".woff2", ".mp3",
     ".mp4", ".m4a", ".aac", ".ogg", ".zip", ".gz", ".br", ".zst", ".heif", ".webm", ".mov",
     ".lottie", ".jxl"}
)  # fmt: skip


def is_compressible(content_type: str, file_extension: str) -> bool:
    """Whether a file of this type is worth compressing (text, code, bytecode, fonts)."""
    ext = file_extension.lower()
    if ext in _INCOMPRESSIBLE_EXTENSIONS:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return (
        media.startswith("text/")
        or media in _COMPRESSIBLE_TYPES
        or (ext in _COMPRESSIBLE_EXTENSIONS)
    )


def brotli_quality(size: int) -> int:
    """Brotli quality for a file of ``size`` bytes: the best up to 4 MB, faster above."""
    return 11 if size <= BROTLI_MAX_QUALITY_BYTES else 9


def compress_variants(data: bytes) -> dict[str, bytes]:
    """The variants of ``data`` worth storing: name -> compressed bytes."""
    limit = len(data) * WORTHWHILE_RATIO
    candidates = {
        "br": brotli.compress(data, quality=brotli_quality(len(data))),
        "gzip": gzip.compress(data, compresslevel=9, mtime=0),
    }
    return {name: body for name, body in candidates.items() if len(body) < limit}


def ensure_variants(blobs: BlobStore, sessions: sessionmaker[Session], sha256: str) -> None:
    """Compute and store the variants of one blob unless they are there already."""
    stored = {v: blobs.size(variant_name(sha256, v)) for v in ("br", "gzip")}
    if all(size is not None for size in stored.values()):
        sizes = stored
    else:
        variants = compress_variants(blobs.read_bytes(sha256))
        for name, body in variants.items():
            if stored[name] is None:
                blobs.put_bytes(variant_name(sha256, name), body)
        sizes = {name: len(variants[name]) if name in variants else None for name in stored}
    with sessions() as session:
        session.execute(
            update(Blob)
            .where(Blob.sha256 == sha256)
            .values(br_size=sizes["br"], gzip_size=sizes["gzip"])
        )
        session.commit()


def gzip_before_publish(
    session: Session, blobs: BlobStore, files: Iterable[tuple[str, str, str]]
) -> int:
    """Store the gzip variant of each compressible blob of a publish that lacks one, inside
    the publish's transaction (``Blob.gzip_size`` is set there), so the update never becomes
    visible while its files can only be sent uncompressed. gzip takes well under a second
    for a large bundle; brotli at quality 11 takes seconds and follows in the background
    (``VariantWorker``), and devices get it as soon as it lands. Takes (sha256, content type,
    file extension) triples; returns the number of variants written."""
    written = 0
    seen: set[str] = set()
    for sha256, content_type, file_extension in files:
        if sha256 in seen or not is_compressible(content_type, file_extension):
            continue
        seen.add(sha256)
        known = session.execute(select(Blob.gzip_size).where(Blob.sha256 == sha256)).scalar()
        if known is not None:
            continue
        name = variant_name(sha256, "gzip")
        size = blobs.size(name)
        if size is None:
            try:
                data = blobs.read_bytes(sha256)
            except (BlobError, OSError):
                log.warning("blob %s is not readable; it is served uncompressed", sha256)
                continue
            body = gzip.compress(data, compresslevel=9, mtime=0)
            if len(body) >= len(data) * WORTHWHILE_RATIO:
                continue  # not worth it; the worker will say so for both variants
            blobs.put_bytes(name, body)
            size, written = len(body), written + 1
        session.execute(update(Blob).where(Blob.sha256 == sha256).values(gzip_size=size))
    return written


class VariantWorker:
    """Computes variants on one background thread, once per blob per process."""

    def __init__(self, blobs: BlobStore, sessions: sessionmaker[Session]) -> None:
        self._blobs = blobs
        self._sessions = sessions
        self._executor = BackgroundQueue("variants")
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def submit(self, files: Iterable[tuple[str, str, str]]) -> list[Future[None]]:
        """Queue (sha256, content type, file extension) triples; skips incompressible ones
        and blobs already queued by this process."""
        futures: list[Future[None]] = []
        for sha256, content_type, file_extension in files:
            if not is_compressible(content_type, file_extension):
                continue
            with self._lock:
                if sha256 in self._seen:
                    continue
                self._seen.add(sha256)
            futures.append(self._executor.submit(self._run, sha256))
        return futures

    def _run(self, sha256: str) -> None:
        try:
            ensure_variants(self._blobs, self._sessions, sha256)
        except Exception:
            # A failed variant only means devices get the uncompressed file; let a later
            # publish try again.
            log.exception("computing compressed variants of %s failed", sha256)
            with self._lock:
                self._seen.discard(sha256)

    def shutdown(self) -> None:
        """Stop, dropping queued work (it is redone by a later publish of the same files)."""
        self._executor.shutdown()
