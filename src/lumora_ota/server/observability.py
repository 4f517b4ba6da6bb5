"""Wires statistics and metrics into the app: the stats recorder (``ctx.components["stats"]``)
with its flush task and auto-pause hook, ``POST /api/v1/events``, the request-metrics
middleware and ``GET /metrics``."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from lumora_ota.server.context import AppContext
from lumora_ota.server.device import events
from lumora_ota.server.lifecycle import Lifecycle
from lumora_ota.server.metrics import (
    MetricsListener,
    MetricsMiddleware,
    build_registry,
    metrics_endpoint,
)
from lumora_ota.stats import StatsBatch, StatsRecorder
from lumora_ota.stats_report import HealthThresholds, auto_pause_failing

log = logging.getLogger("lumora_ota.stats")


def install(app: FastAPI, ctx: AppContext, lifecycle: Lifecycle) -> None:
    """Register the stats recorder, the events route and Prometheus metrics."""
    settings = ctx.settings
    recorder = StatsRecorder(ctx.engine, flush_interval=settings.stats_flush_interval)
    thresholds = HealthThresholds(settings.health_failure_rate, settings.health_min_launches)

    def pause_failing_updates(batch: StatsBatch) -> None:
        # Only a new failure can push an update over the threshold.
        candidates = [(p, u) for (p, _d, u, f) in batch.facts if f == "launch_failure"]
        if not candidates:
            return
        with ctx.session() as session:
            for update_id in auto_pause_failing(session, candidates, thresholds):
                log.warning("auto-paused update %s: launch failure rate too high", update_id)

    recorder.add_flush_hook(pause_failing_updates)
    ctx.components["stats"] = recorder
    lifecycle.on_start(recorder.start)
    lifecycle.on_stop(recorder.stop)

    app.include_router(events.router, prefix="/api/v1")

    registry, request_metrics = build_registry(ctx)
    ctx.components["metrics_registry"] = registry
    ctx.components["request_metrics"] = request_metrics
    app.add_middleware(MetricsMiddleware, metrics=request_metrics)
    app.add_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    if settings.metrics_bind is not None:
        listener = MetricsListener(registry, *settings.metrics_bind)
        lifecycle.on_start(listener.start)
        lifecycle.on_stop(listener.stop)
