"""Stopping granian's workers (``server/workerstop.py``): a worker on its way out is never
reported as stuck or killed, a stuck one is killed after the bound with an error."""

from __future__ import annotations

import logging
import os

import pytest

from lumora_ota.server.workerstop import SETTING, granian_server, stop_workers


class FakeProcess:
    """A worker process whose sentinel is a pipe we close to say "it exited"."""

    def __init__(self) -> None:
        self.sentinel, self._write = os.pipe()
        self.joined = False

    def exit(self) -> None:
        if self._write >= 0:
            os.close(self._write)
            self._write = -1

    def join(self, timeout: float | None = None) -> None:
        # A join with a timeout returns once the sentinel is ready, before the exiting
        # process can be reaped; a join without one waits until it is (``waitpid``).
        if timeout is None:
            self.joined = True

    def is_alive(self) -> bool:
        # What ``waitpid`` says while the kernel tears the exiting process down: its files
        # are closed (the sentinel is ready) but it cannot be reaped yet.
        return not self.joined


class FakeWorker:
    def __init__(self, idx: int, *, exits: bool) -> None:
        self.idx = idx
        self.inner = FakeProcess()
        self.exits = exits
        self.killed = False
        self.interrupt_by_parent = False

    def terminate(self) -> None:
        if self.exits:
            self.inner.exit()

    def kill(self) -> None:
        self.killed = True
        self.inner.exit()

    def is_alive(self) -> bool:
        return self.inner.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self.inner.join(timeout)


def test_an_exiting_worker_is_reaped_not_killed(caplog: pytest.LogCaptureFixture) -> None:
    workers = [FakeWorker(0, exits=True), FakeWorker(1, exits=True)]
    with caplog.at_level(logging.INFO, logger="lumora_ota.server"):
        assert stop_workers(workers, 5.0) == []  # type: ignore[arg-type]
    assert not any(w.killed for w in workers)
    assert all(w.inner.joined for w in workers)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_stuck_worker_is_killed_loudly(caplog: pytest.LogCaptureFixture) -> None:
    workers = [FakeWorker(0, exits=True), FakeWorker(1, exits=False)]
    with caplog.at_level(logging.INFO, logger="lumora_ota.server"):
        assert stop_workers(workers, 0.05) == [1]  # type: ignore[arg-type]
    assert not workers[0].killed and workers[1].killed
    assert all(w.inner.joined for w in workers)
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "worker-2" in error.getMessage() and SETTING in error.getMessage()


def test_the_launched_granian_does_not_kill_an_exiting_worker() -> None:
    """granian's own ``_stop_workers`` killed a worker whose sentinel had closed but which
    was not reapable 1 ms later ("refused to gracefully stop" under load)."""
    server_class = granian_server(5.0)
    server = server_class.__new__(server_class)
    worker = FakeWorker(0, exits=True)
    server.wrks = [worker]
    server._stop_workers()
    assert not worker.killed
    assert worker.inner.joined
    assert server.wrks == []
