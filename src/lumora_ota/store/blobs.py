"""Content-addressed blob storage.

A blob is named by the lowercase hex SHA-256 of its bytes. ``BlobStore`` is the interface;
``FileBlobStore`` keeps blobs under a folder (the default), and the S3 backend in
``lumora_ota.store.s3`` keeps them in any S3-compatible bucket. Compressed variants of a blob
(``br``, ``gzip``) and other derived objects (delta patches) live beside it under their own
names, and are written once.

Writes are atomic: bytes stream into a temporary object that is hash-checked and size-capped,
and only then moved to its final name, so a crash never leaves a partial blob under a final
name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from lumora_ota.store.outage import StorageFull, is_no_space

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Object names are hashes or hash-derived (``<sha256>.br``), never user-supplied paths.
BLOB_NAME_RE = re.compile(r"[0-9a-f]{64}(\.[a-z0-9._-]{1,80})?")
CHUNK_SIZE = 1024 * 1024

VARIANTS = ("br", "gzip")


class BlobError(Exception):
    """Base of blob-store failures that the API reports as client errors."""


class HashMismatch(BlobError):
    """The uploaded bytes do not hash to the declared SHA-256."""


class SizeExceeded(BlobError):
    """The upload went past the configured size limit."""


def is_sha256(value: str) -> bool:
    """Whether ``value`` is a lowercase hex SHA-256."""
    return bool(SHA256_RE.fullmatch(value))


def check_blob_name(name: str) -> str:
    """``name`` if it is a valid object name (a hash or hash-derived); else ValueError."""
    if not BLOB_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid blob name: {name!r}")
    return name


@dataclass(frozen=True)
class StoredBlob:
    """What a completed upload wrote."""

    sha256: str
    size: int


@dataclass(frozen=True)
class BlobLocation:
    """Where a device can get a blob: a local file to send, or a URL to redirect to.

    ``cache_control`` is what a redirect to ``url`` may carry: a pre-signed URL expires, so
    its redirect is private and short-lived; a public/CDN URL is as immutable as the blob.
    """

    path: Path | None = None
    url: str | None = None
    cache_control: str | None = None


class BlobStore(Protocol):
    """Storage of immutable blobs by SHA-256, and of named objects derived from them."""

    async def put_stream(
        self, sha256: str, chunks: AsyncIterator[bytes], *, max_bytes: int
    ) -> StoredBlob:
        """Store the streamed bytes under ``sha256`` after checking hash and size.

        Raises ``HashMismatch`` or ``SizeExceeded``; either way nothing is left behind.
        Raises ``StorageFull`` when the store has no room, ``DependencyUnavailable`` when it
        cannot be reached (``store.outage``); nothing is left behind then either.
        """
        ...

    def put_bytes(self, name: str, data: bytes) -> None:
        """Store a small derived object (a compressed variant, a patch) atomically."""
        ...

    def exists(self, name: str) -> bool:
        """Whether an object of that name (a hash, or a derived name) is stored."""
        ...

    def size(self, name: str) -> int | None:
        """The stored size of an object, or None when it is absent."""
        ...

    def open_read(self, name: str) -> Iterator[bytes]:
        """The object's bytes, in chunks."""
        ...

    def read_bytes(self, name: str) -> bytes:
        """The whole object (for derived-object computation, not for device delivery);
        ``FileNotFoundError`` when there is none."""
        ...

    def locate(
        self, name: str, *, content_type: str | None = None, content_encoding: str | None = None
    ) -> BlobLocation:
        """How a device request should be answered for this object.

        A store answering with a URL makes the response behind it carry ``content_type``
        and ``content_encoding`` (a pre-signed URL overrides the stored headers).
        """
        ...

    def delete(self, name: str) -> None:
        """Remove an object if present."""
        ...

    def check(self) -> None:
        """Raise if the store cannot be reached or written (used by ``/health``)."""
        ...


def variant_name(sha256: str, variant: str) -> str:
    """The object name of a compressed variant of a blob."""
    return f"{sha256}.{variant}"


class FileBlobStore:
    """Blobs as files under ``root``, fanned out by the first two hash byte pairs."""

    # A live upload writes its temp file at least every upload-idle-timeout; one untouched
    # for this long belongs to a process that was killed mid-upload.
    STALE_TEMP_SECONDS = 3600.0

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / ".tmp"
        self.name = "the blob store (local disk)"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self.sweep_stale_temp_files()

    def sweep_stale_temp_files(self, *, older_than: float | None = None) -> int:
        """Delete temp files left by killed uploads; returns how many went.

        Only old files go, since other servers may share this folder and be uploading now.
        """
        limit = time.time() - (self.STALE_TEMP_SECONDS if older_than is None else older_than)
        removed = 0
        for path in self._tmp.glob("up-*"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < limit:
                    path.unlink()
                    removed += 1
        return removed

    def path_for(self, name: str) -> Path:
        """The final path of an object. Names are hashes or hash-derived, never user paths."""
        return self.root / self.relative_path(name)

    @staticmethod
    def relative_path(name: str) -> str:
        """An object's path under ``root`` (``ab/cd/abcd….br``: URL-safe, no ``..``); what
        nginx appends to its ``alias`` of the blob folder (``X-Accel-Redirect``)."""
        check_blob_name(name)
        return f"{name[:2]}/{name[2:4]}/{name}"

    @contextlib.contextmanager
    def _temp_file(self) -> Iterator[tuple[BinaryIO, Path]]:
        # A file object, not a raw fd: it is closed exactly once. Closing a raw fd a second
        # time would close whatever another thread opened under the same number meanwhile
        # (a client socket, the server runtime's own descriptors).
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="up-")
        tmp_path = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh, tmp_path
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()

    @staticmethod
    def _sync_and_close(fh: BinaryIO) -> None:
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()

    def _publish(self, tmp_path: Path, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_path, final)

    async def put_stream(
        self, sha256: str, chunks: AsyncIterator[bytes], *, max_bytes: int
    ) -> StoredBlob:
        """See ``BlobStore.put_stream``."""
        with self._no_space_is_full():
            return await self._put_stream(sha256, chunks, max_bytes=max_bytes)

    @contextlib.contextmanager
    def _no_space_is_full(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            if is_no_space(exc):
                raise StorageFull(self.name) from exc
            raise

    async def _put_stream(
        self, sha256: str, chunks: AsyncIterator[bytes], *, max_bytes: int
    ) -> StoredBlob:
        final = self.path_for(sha256)
        digest = hashlib.sha256()
        size = 0
        with self._temp_file() as (fh, tmp_path):
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise SizeExceeded(f"upload exceeds the {max_bytes}-byte limit")
                digest.update(chunk)
                fh.write(chunk)
            if digest.hexdigest() != sha256:
                raise HashMismatch(
                    f"uploaded bytes hash to {digest.hexdigest()}, not the declared {sha256}"
                )
            self._sync_and_close(fh)
            self._publish(tmp_path, final)
        return StoredBlob(sha256=sha256, size=size)

    def put_bytes(self, name: str, data: bytes) -> None:
        """See ``BlobStore.put_bytes``."""
        final = self.path_for(name)
        with self._no_space_is_full(), self._temp_file() as (fh, tmp_path):
            fh.write(data)
            self._sync_and_close(fh)
            self._publish(tmp_path, final)

    def exists(self, name: str) -> bool:
        """See ``BlobStore.exists``."""
        return self.path_for(name).is_file()

    def size(self, name: str) -> int | None:
        """See ``BlobStore.size``."""
        try:
            return self.path_for(name).stat().st_size
        except FileNotFoundError:
            return None

    def open_read(self, name: str) -> Iterator[bytes]:
        """See ``BlobStore.open_read``."""
        with open(self.path_for(name), "rb") as fh:
            while chunk := fh.read(CHUNK_SIZE):
                yield chunk

    def read_bytes(self, name: str) -> bytes:
        """See ``BlobStore.read_bytes``."""
        return self.path_for(name).read_bytes()

    def locate(
        self, name: str, *, content_type: str | None = None, content_encoding: str | None = None
    ) -> BlobLocation:
        """See ``BlobStore.locate``; the route sends the file with its own headers."""
        return BlobLocation(path=self.path_for(name))

    def delete(self, name: str) -> None:
        """See ``BlobStore.delete``."""
        with contextlib.suppress(FileNotFoundError):
            self.path_for(name).unlink()

    def check(self) -> None:
        """See ``BlobStore.check``."""
        with self._temp_file() as (fh, _):
            fh.write(b"ok")


def open_blob_store(url: str) -> BlobStore:
    """The blob store for a storage URL: ``file:///path`` or ``s3://bucket?...``."""
    if url.startswith("file://"):
        return FileBlobStore(Path(url[len("file://") :]))
    if url.startswith("s3://"):
        from lumora_ota.store.s3 import S3BlobStore

        return S3BlobStore.from_url(url)
    if "://" not in url:
        return FileBlobStore(Path(url))
    raise ValueError(f"unsupported storage URL: {url}")
