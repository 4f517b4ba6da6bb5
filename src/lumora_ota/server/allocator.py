"""The C allocator of a server process (glibc ``malloc``): fewer arenas, and freed memory
handed back to the system.

Why (performance issue 21, target 3): a worker's Python objects take about 70 MB (a
``tracemalloc`` snapshot after the benchmark's data set and its checks: 25 MB of it module
code), yet its RSS was 170-185 MB. The rest is memory the C allocator keeps: glibc gives each
thread that allocates its own arena (up to 8 per core), and the worker runs many (anyio's
thread pool for database loads, the statistics flush, brotli and bsdiff work), each arena
keeping its freed pages. Two arenas serve these threads just as well (they hold the GIL most
of the time anyway), and ``malloc_trim`` returns the free pages inside the heaps too.

Both are no-ops where the C library is not glibc (musl, macOS). ``MALLOC_ARENA_MAX`` set by
the operator wins over ``ARENA_MAX``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import time

log = logging.getLogger("lumora_ota.server")

ARENA_MAX = 2
_M_ARENA_MAX = -8  # mallopt parameter number (glibc malloc.h)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, when this process runs on it."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        libc.malloc_trim  # noqa: B018
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas() -> int | None:
    """Cap the malloc arenas of this process and of the processes it forks or starts (the
    environment variable, for spawned workers): ``MALLOC_ARENA_MAX`` when set, else
    ``ARENA_MAX``. Returns the cap applied, None without glibc."""
    wanted = os.environ.get("MALLOC_ARENA_MAX", "")
    arenas = int(wanted) if wanted.isdigit() and int(wanted) > 0 else ARENA_MAX
    os.environ["MALLOC_ARENA_MAX"] = str(arenas)
    libc = _libc()
    if libc is None:
        return None
    libc.mallopt(_M_ARENA_MAX, arenas)
    return arenas


def trim() -> bool:
    """Give the free pages of every malloc arena back to the system (``malloc_trim(0)``).
    Blocking for a few milliseconds on a large heap: call from a worker thread. Returns
    whether any memory was released."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


class PeriodicTrim:
    """A statistics flush hook (``StatsRecorder.add_flush_hook``, run in the flush thread)
    that calls ``trim`` at most once every ``interval`` seconds: the flush thread is idle
    between flushes, and a busy server flushes every second."""

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._last = 0.0
        self.trims = 0

    def __call__(self, _batch: object) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            trim()
            self.trims += 1
