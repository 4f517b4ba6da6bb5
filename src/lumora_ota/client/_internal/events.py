"""Reporting client events to ``POST /api/v1/events`` from a background thread.

Events are queued (bounded: when full, new events are dropped and counted), sent in batches,
retried a bounded number of times, then dropped. Nothing here ever raises into the app or
blocks it: failures go to the error callback.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lumora_ota.client.fetcher import FetcherInterface
from lumora_ota.event_types import EventType

log = logging.getLogger("lumora_ota.client")


def utc_now_iso() -> str:
    """Now, as ISO 8601 UTC with milliseconds and ``Z``."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class EventReporter:
    """Batches events in memory and posts them from a daemon thread."""

    def __init__(
        self,
        fetcher: FetcherInterface,
        url: str,
        *,
        device_id: str,
        project_id: str,
        on_error: Callable[[Exception], None],
        max_queue: int = 1000,
        batch_size: int = 100,
        max_attempts: int = 3,
        retry_delay: float = 1.0,
        linger: float = 0.2,
    ) -> None:
        self._fetcher = fetcher
        self._url = url
        self._device_id = device_id
        self._project_id = project_id
        self._on_error = on_error
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(max_queue)
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        self._retry_delay = retry_delay
        self._linger = linger
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self.dropped = 0
        self.sent = 0

    def report(self, event_type: EventType, update_id: str | None = None, **fields: Any) -> None:
        """Queue one event; never blocks, never raises."""
        try:
            event: dict[str, Any] = {"type": event_type, "at": utc_now_iso()}
            if update_id is not None:
                event["updateId"] = update_id
            event.update({k: v for k, v in fields.items() if v is not None})
            with self._lock:
                if self._stopping.is_set():
                    return
                try:
                    self._queue.put_nowait(event)
                except queue.Full:
                    self.dropped += 1
                    return
                self._in_flight += 1
                self._ensure_thread()
        except Exception as exc:  # reporting must never break the app
            self._safe_error(exc)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event was sent or dropped; returns whether it finished."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Flush (bounded by ``timeout``) and stop the thread."""
        self.flush(timeout)
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=1.0)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="lumora-events", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            # Let a burst of events (download, install, ...) gather into one request.
            time.sleep(self._linger)
            batch = [first]
            while len(batch) < self._batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._send(batch)
            with self._idle:
                self._in_flight -= len(batch)
                self._idle.notify_all()

    def _send(self, batch: list[dict[str, Any]]) -> None:
        payload = {"deviceId": self._device_id, "projectId": self._project_id, "events": batch}
        for attempt in range(1, self._max_attempts + 1):
            try:
                self._fetcher.post_json(self._url, payload, max_length=64 * 1024)
                self.sent += len(batch)
                return
            except Exception as exc:
                if attempt == self._max_attempts:
                    self.dropped += len(batch)
                    self._safe_error(exc)
                    return
                if self._stopping.wait(self._retry_delay * 2 ** (attempt - 1)):
                    self.dropped += len(batch)
                    return

    def _safe_error(self, exc: Exception) -> None:
        try:
            self._on_error(exc)
        except Exception:
            log.exception("the on_error callback failed")
