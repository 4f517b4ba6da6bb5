"""``AutoUpdateChecker``: check (and download) in a background thread, forever, safely."""

from __future__ import annotations

import logging
import random
import threading

from lumora_ota.client.updater import CheckResult, UpdateManager

log = logging.getLogger("lumora_ota.client")


class AutoUpdateChecker:
    """Calls ``manager.check_for_update()`` every ``interval`` seconds (± ``jitter``).

    With ``download=True`` an offered update is downloaded and installed too (it becomes
    ready; the app decides when to apply it, e.g. from ``on_update_ready``). The thread is a
    daemon and swallows every error (the manager already reported it through ``on_error``),
    so it never crashes or blocks the app. Jitter spreads a fleet's checks over time.
    """

    def __init__(
        self,
        manager: UpdateManager,
        interval: float = 3600.0,
        *,
        jitter: float = 0.1,
        first_check_delay: float = 0.0,
        download: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        if interval <= 0 or not 0 <= jitter < 1:
            raise ValueError("interval must be > 0 and 0 <= jitter < 1")
        self.manager = manager
        self.interval = interval
        self.jitter = jitter
        self.first_check_delay = first_check_delay
        self.download = download
        self.checks = 0
        self.last_result: CheckResult | None = None
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = threading.Condition()

    def start(self) -> AutoUpdateChecker:
        """Start the background thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="lumora-auto-update", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait (bounded) for it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def check_now(self) -> None:
        """Wake the thread for an immediate check."""
        self._wake.set()

    def wait_for_checks(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` checks finished (for apps and tests)."""
        with self._done:
            return self._done.wait_for(lambda: self.checks >= count, timeout)

    def __enter__(self) -> AutoUpdateChecker:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def next_delay(self) -> float:
        """Seconds until the next check: the interval spread by ± jitter."""
        spread = self.interval * self.jitter
        return self.interval + self._rng.uniform(-spread, spread)

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _run(self) -> None:
        if self.first_check_delay > 0:
            self._sleep(self.first_check_delay)
        while not self._stop.is_set():
            self._check_once()
            self._sleep(self.next_delay())

    def _check_once(self) -> None:
        try:
            result = self.manager.check_for_update()
            self.last_result = result
            if self.download and result.update_available:
                self.manager.download_and_install_update(result)
        except Exception:  # already reported through on_error; the app must keep running
            log.debug("background update check failed", exc_info=True)
        finally:
            with self._done:
                self.checks += 1
                self._done.notify_all()
