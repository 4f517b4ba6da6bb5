"""A per-process memo of object sizes in a remote blob store (S3).

The asset route of a URL-answering store must know, without a network round trip per
request, whether a blob and its compressed variants exist (to pick a variant, or answer 404
instead of redirecting to nothing) and how big they are (for statistics). Blobs and variants
are immutable once written, so a size learned with one HEAD is remembered for good; an
absent object is asked about again after ``absent_ttl`` seconds, because variants are
computed in the background after a publish and a blob may be uploaded later.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio.to_thread

from lumora_ota.store.blobs import BlobStore

DEFAULT_ABSENT_TTL = 10.0
DEFAULT_LIMIT = 200_000


class KnownSizes:
    """Sizes of objects of one store, learned lazily (thread- and task-safe enough: a race
    only costs a duplicate HEAD)."""

    def __init__(
        self,
        blobs: BlobStore,
        *,
        absent_ttl: float = DEFAULT_ABSENT_TTL,
        limit: int = DEFAULT_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._blobs = blobs
        self._absent_ttl = absent_ttl
        self._limit = limit
        self._clock = clock
        self._present: dict[str, int] = {}
        self._absent_until: dict[str, float] = {}

    def cached(self, name: str) -> tuple[bool, int | None]:
        """(known, size): whether the memo can answer, and the size (None = absent)."""
        size = self._present.get(name)
        if size is not None:
            return True, size
        until = self._absent_until.get(name)
        if until is not None and until > self._clock():
            return True, None
        return False, None

    def remember(self, name: str, size: int | None) -> None:
        """Record what the store said about ``name``."""
        if size is None:
            if len(self._absent_until) >= self._limit:
                self._absent_until.clear()
            self._absent_until[name] = self._clock() + self._absent_ttl
            return
        if len(self._present) >= self._limit:
            self._present.clear()
        self._present[name] = size
        self._absent_until.pop(name, None)

    async def size(self, name: str) -> int | None:
        """The object's size, asking the store (in a worker thread) only when unknown."""
        known, size = self.cached(name)
        if known:
            return size
        size = await anyio.to_thread.run_sync(self._blobs.size, name)
        self.remember(name, size)
        return size
