"""Dependency outages: telling a database or storage failure from a bug, and logging it
once per interval instead of once per request.

A failure of the database (PostgreSQL down, SQLite locked by another process) or of the blob
store (disk full, object store unreachable) is no bug of ours: the API answers it with a
problem document naming the dependency (503 with ``Retry-After``, or 507 when storage is
full, RFC 4918 §11.5) instead of a 500, and the log says so once per interval, with a count,
instead of a traceback per request (an outage under device load wrote 20 MB in 20 s).
"""

from __future__ import annotations

import errno
import logging
import threading
import time

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# Seconds a client is told to wait before retrying during an outage.
RETRY_AFTER_SECONDS = 5
# A repeated outage message is logged at most once per this many seconds.
LOG_INTERVAL_SECONDS = 10.0

_NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DependencyUnavailable(Exception):
    """A dependency (``what``: "the database (postgresql)", "the blob store") cannot be used
    right now; answered 503 with ``Retry-After``."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what} is unavailable: {reason}")
        self.what = what
        self.reason = reason


class StorageFull(Exception):
    """``what`` ("the blob store", "the database") has no space left; answered 507."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is out of space")
        self.what = what


def describe(exc: BaseException) -> str:
    """``Type: first line`` of an error (of the driver's error for a SQLAlchemy one), at most
    ~200 characters: what one-line log messages and problem details say about it."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0][:200]}" if lines else type(orig).__name__


def database_name(engine: Engine) -> str:
    """How problem documents and logs name the database: ``the database (sqlite)``."""
    return f"the database ({engine.dialect.name})"


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the disk or quota is full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE_ERRNOS:
            return True
        if isinstance(current, DBAPIError) and "full" in str(current.orig).lower():
            # sqlite3: "database or disk is full"; PostgreSQL: "could not extend file ...
            # No space left on device" arrives as DiskFull, whose text says "full" too.
            return True
        current = current.__cause__ or current.__context__
    return False


def database_outage(exc: BaseException) -> str | None:
    """A short reason when ``exc`` means the database cannot be reached or written right now
    (connection refused or lost, pool exhausted, SQLite locked); None for anything else."""
    if isinstance(exc, PoolTimeoutError):
        return "no database connection became free in time"
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return "the connection to the database was lost"
    if isinstance(exc, (OperationalError, InterfaceError)):
        text = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        if "locked" in text or "busy" in text:
            return "the database is locked by another process"
        return text[:200] or "the database cannot be reached"
    return None


class ThrottledLog:
    """Logs each ``key``'s message at most once per ``interval`` seconds, with the number of
    repeats it swallowed since. Thread-safe; cheap when suppressing."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self._logger = logger
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}

    def log(self, level: int, key: str, message: str, *args: object) -> bool:
        """Log ``message % args`` unless ``key`` was logged within the interval; True if it
        was written."""
        now = time.monotonic()
        with self._lock:
            last, swallowed = self._last.get(key, (float("-inf"), 0))
            if now - last < self._interval:
                self._last[key] = (last, swallowed + 1)
                return False
            self._last[key] = (now, 0)
        if swallowed:
            message += " (%d more like this in the last %.0f s)"
            args = (*args, swallowed, self._interval)
        self._logger.log(level, message, *args)
        return True

    def warning(self, key: str, message: str, *args: object) -> bool:
        """``log(logging.WARNING, ...)``."""
        return self.log(logging.WARNING, key, message, *args)

    def recovered(self, key: str, message: str, *args: object) -> None:
        """Log ``message`` (info) if ``key`` had been reported, and forget it."""
        with self._lock:
            known = self._last.pop(key, None)
        if known is not None:
            self._logger.info(message, *args)
