"""Wires statistics and metrics into the app: the stats recorder (``ctx.stats``)
with its flush task and auto-pause hook, the events endpoint, the request-metrics
middleware and ``GET /metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI
from sqlalchemy import Engine

from lumora_ota.server.allocator import PeriodicTrim
from lumora_ota.server.context import AppContext
from lumora_ota.server.device import events
from lumora_ota.server.lifecycle import Lifecycle
from lumora_ota.server.metrics import (
    MetricsListener,
    MetricsMiddleware,
    metrics_endpoint,
)
from lumora_ota.stats import StatsBatch, utc_now
from lumora_ota.stats_report import auto_pause_failing, health_thresholds
from lumora_ota.stats_retention import PRUNE_INTERVAL, prune_statistics

log = logging.getLogger("lumora_ota.stats")

# Seconds after start before the first retention run (start-up stays quick).
PRUNE_FIRST_DELAY = 30.0


class RetentionTask:
    """Prunes statistics past the retention (``lumora_ota.stats_retention``) shortly after
    start and then every ``PRUNE_INTERVAL`` seconds, in a worker thread."""

    def __init__(self, engine: Engine, retention_days: int) -> None:
        self._engine = engine
        self._retention_days = retention_days
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        delay = PRUNE_FIRST_DELAY
        while True:
            await asyncio.sleep(delay)
            delay = PRUNE_INTERVAL
            try:
                await asyncio.to_thread(
                    prune_statistics, self._engine, utc_now(), self._retention_days
                )
            except Exception:
                log.exception("statistics retention failed; will retry")

    async def start(self) -> None:
        """Start the periodic task."""
        self._task = asyncio.create_task(self._run(), name="lumora-stats-retention")

    async def stop(self) -> None:
        """Stop it (a run in progress finishes in its thread)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def install(app: FastAPI, ctx: AppContext, lifecycle: Lifecycle) -> None:
    """Register the stats recorder, the events route and Prometheus metrics."""
    settings = ctx.settings
    recorder = ctx.stats
    thresholds = health_thresholds(settings)

    def pause_failing_updates(batch: StatsBatch) -> None:
        # Only a new failure can push an update over the threshold, or a served-to record
        # that makes a failure stored earlier count (another process flushed it first).
        candidates = [(p, u) for (p, _d, u, f) in batch.facts if f == "launch_failure"]
        candidates += [(p, u) for (p, u, _d) in batch.served]
        if not candidates:
            return
        with ctx.session() as session:
            for update_id in auto_pause_failing(session, candidates, thresholds):
                log.warning("auto-paused update %s: launch failure rate too high", update_id)

    recorder.add_flush_hook(pause_failing_updates)
    # Memory freed since the last flush (the batch, loads, compressions) goes back to the
    # system now and then, not only when the heap top happens to be free (issue 21).
    recorder.add_flush_hook(PeriodicTrim())
    lifecycle.on_start(recorder.start)
    lifecycle.on_stop(recorder.stop)
    pruner = RetentionTask(ctx.engine, settings.stats_retention_days)
    lifecycle.on_start(pruner.start)
    lifecycle.on_stop(pruner.stop)

    app.include_router(events.router)

    registry = ctx.metrics
    app.add_middleware(MetricsMiddleware, metrics=ctx.request_metrics)
    app.add_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    if settings.metrics_bind is not None:
        listener = MetricsListener(registry, *settings.metrics_bind)
        lifecycle.on_start(listener.start)
        lifecycle.on_stop(listener.stop)
