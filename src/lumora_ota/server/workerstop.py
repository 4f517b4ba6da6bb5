"""Stopping granian's worker processes within a bound, killing only one that is really stuck.

granian's own ``_stop_workers`` sends SIGTERM, waits on each worker's process sentinel (a pipe
the kernel closes when the process exits), then asks ``is_alive()`` (``waitpid``) once more
after 1 ms and kills the worker with "refused to gracefully stop" if it is still there. The
kernel closes a dying process's files *before* it becomes a zombie its parent can reap, and a
process with threads (granian's runtime, our background queues) only becomes reapable once
every thread has left: on a loaded machine that takes longer than 1 ms. So a worker that had
finished its shutdown (statistics flushed, database closed) was reported as stuck and sent
SIGKILL on its way out (seen once in ``test_sigterm_during_patch_work_exits_fast``).

Here a ready sentinel means the worker is exiting: it is reaped without a timeout (its exit
cannot be undone). Only a worker whose sentinel is still open when the bound has passed is
killed, with an error naming the bound's setting.
"""

from __future__ import annotations

import logging
import time
from multiprocessing.connection import wait
from typing import Any, Protocol

log = logging.getLogger("lumora_ota.server")

SETTING = "LUMORA_SHUTDOWN_TIMEOUT"


class Process(Protocol):
    """What is used of a worker's ``multiprocessing.Process``."""

    @property
    def sentinel(self) -> int: ...

    def join(self, timeout: float | None = None) -> None: ...


class Worker(Protocol):
    """What is used of a granian worker (``granian.server.mp.WorkerProcess``)."""

    idx: int
    inner: Process

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


def stop_workers(workers: list[Worker], timeout: float) -> list[int]:
    """SIGTERM every worker, give them ``timeout`` seconds (together) to exit, SIGKILL those
    still running then (logged as errors); returns the indexes of the killed workers. Every
    worker is reaped before it returns."""
    for worker in workers:
        worker.terminate()
    deadline = time.monotonic() + timeout
    killed = []
    for worker in workers:
        remaining = max(deadline - time.monotonic(), 0.0)
        if not wait([worker.inner.sentinel], remaining):
            log.error(
                "worker-%d did not finish its shutdown within %g s of SIGTERM (%s): killed; "
                "statistics it had not flushed are lost",
                worker.idx + 1,
                timeout,
                SETTING,
            )
            worker.kill()
            killed.append(worker.idx)
        worker.inner.join()  # exiting: its sentinel closed, or killed just now
        log.info("Stopped worker-%d", worker.idx + 1)
    return killed


def granian_server(timeout: float) -> Any:
    """granian's server class (``granian.server.Server``) with its workers stopped by
    ``stop_workers`` within ``timeout`` seconds."""
    from granian.server import Server

    class LumoraGranian(Server):  # type: ignore[misc,valid-type]
        def _stop_workers(self) -> None:
            stop_workers(self.wrks, timeout)
            self.wrks.clear()

    return LumoraGranian
