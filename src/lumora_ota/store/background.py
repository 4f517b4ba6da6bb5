"""A one-thread queue for background work that must never hold up shutdown.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter exits, so a
server process asked to stop (SIGTERM) while brotli or bsdiff chews on a large bundle waited
for it, for as long as it took, and the ASGI server killed it after its grace period (10 s),
then re-queued the job at the next start. The work queued here (compressed variants, delta
patches) is idempotent and stored atomically: abandoning it half-way loses nothing that the
next start does not redo. So it runs on a *daemon* thread, which the interpreter does not
wait for, and ``shutdown`` drops what has not started.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_STOP = object()


class BackgroundQueue:
    """Runs submitted calls one at a time, in order, on a daemon thread named ``name``."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue ``fn(*args)``; its future is cancelled if shutdown comes first."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                future.cancel()
                return future
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
            self._queue.put((future, fn, args))
        return future

    def shutdown(self) -> None:
        """Accept nothing more and cancel what has not started; the running call is left to
        finish or to die with the process (never waited for)."""
        with self._lock:
            self._closed = True
            self._queue.put(_STOP)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            future, fn, args = item
            if self._closed or not future.set_running_or_notify_cancel():
                future.cancel()
                continue
            try:
                result = fn(*args)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
        while True:  # cancel what was queued behind the stop
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                item[0].cancel()
