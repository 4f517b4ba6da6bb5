"""Prometheus ``GET /metrics``: per-route request counts and latencies, delivery-cache hit
rates, publish counts and the statistics figures.

Everything lives in a ``CollectorRegistry`` made per application (no module globals).
Request metrics are process-local (each worker of a multi-worker server has its own); the
statistics gauges are read from the database at scrape time (cached a few seconds), so they
are the cluster-wide figures whichever process answers.
"""

from __future__ import annotations

import asyncio
import math
import time
from bisect import bisect_left
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lumora_ota.server.context import AppContext, app_context
from lumora_ota.server.management.auth import current_principal
from lumora_ota.stats_report import (
    ACTIVE_WINDOWS,
    counted_facts,
    evaluate_health,
    health_counts,
    health_thresholds,
)
from lumora_ota.store.models import (
    DeviceState,
    DeviceUpdateFact,
    Project,
    StatCounter,
    Update,
    UpdateGroup,
    utcnow,
)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DB_FIGURES_TTL = 5.0


class RequestMetrics:
    """Request counter and latency histogram, labelled by method and route template.

    Kept as plain numbers updated on the event loop (no prometheus-client child per label
    set: its counter and histogram take a lock on every update, a tenth of a device answer's
    cost here) and handed to the registry as the same metric families when scraped:
    ``lumora_http_requests_total{method,route,status}`` and
    ``lumora_http_request_duration_seconds{method,route}`` (``LATENCY_BUCKETS``).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._counts: dict[tuple[str, str, int], int] = {}
        # Per (method, route): one count per bucket of LATENCY_BUCKETS plus +Inf, then the sum.
        self._latency: dict[tuple[str, str], list[float]] = {}
        registry.register(_RequestCollector(self))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        key = (method, route, status)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        latency = self._latency.get((method, route))
        if latency is None:
            latency = self._latency[(method, route)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        latency[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # le: the first bound >= seconds
        latency[-1] += seconds

    def families(self) -> Iterator[Metric]:
        """The two metric families, from a snapshot of the numbers."""
        requests = CounterMetricFamily(
            "lumora_http_requests",
            "HTTP requests answered, by method, route template and status.",
            labels=["method", "route", "status"],
        )
        for (method, route, status), count in list(self._counts.items()):
            requests.add_metric([method, route, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "lumora_http_request_duration_seconds",
            "Time to answer HTTP requests, by method and route template.",
            labels=["method", "route"],
        )
        for (method, route), values in list(self._latency.items()):
            values = list(values)
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, observed in zip((*LATENCY_BUCKETS, math.inf), values, strict=False):
                cumulative += observed
                buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
            latency.add_metric([method, route], buckets, values[-1])
        yield latency


class _RequestCollector(Collector):
    def __init__(self, metrics: RequestMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.families()


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/api/v1/updates/{update_id}``), not the raw path,
    so label cardinality stays bounded."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(template) if template else "unmatched"


class MetricsMiddleware:
    """A plain ASGI middleware (cheap: no request/response objects) timing every request."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.observe(
                scope.get("method", "GET"),
                route_template(scope),
                status,
                time.perf_counter() - started,
            )


class ProcessCollector(Collector):
    """Process-local figures: stats recorder totals and delivery-cache counters."""

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx

    def collect(self) -> Iterator[Metric]:
        """Yield the current values."""
        recorder = self._ctx.stats
        recorded = CounterMetricFamily(
            "lumora_stats_recorded",
            "Statistics records taken by this process, by kind.",
            labels=["kind"],
        )
        for kind, n in sorted(recorder.totals.items()):
            recorded.add_metric([kind], n)
        yield recorded
        yield CounterMetricFamily(
            "lumora_stats_flushes", "Successful statistics flushes.", value=recorder.flushes
        )
        yield CounterMetricFamily(
            "lumora_stats_flush_errors",
            "Failed statistics flushes (retried).",
            value=recorder.flush_errors,
        )
        yield GaugeMetricFamily(
            "lumora_stats_pending_rows",
            "Statistics rows waiting for the next flush.",
            value=recorder.pending,
        )
        yield from delivery_metrics(self._ctx.delivery)
        edge = self._ctx.edge
        if edge is not None:
            yield CounterMetricFamily(
                "lumora_device_edge_answered",
                "Device requests answered by the device edge, ahead of the framework.",
                value=edge.answered,
            )


def delivery_metrics(delivery: Any) -> Iterator[Metric]:
    """Cache counters of the delivery component, when it exposes ``hits``/``misses``,
    ``invalidations`` or a ``metrics()`` mapping of name to number."""
    if delivery is None:
        return
    hits = getattr(delivery, "hits", None)
    misses = getattr(delivery, "misses", None)
    if isinstance(hits, int) and isinstance(misses, int):
        yield CounterMetricFamily("lumora_delivery_cache_hits", "Delivery cache hits.", value=hits)
        yield CounterMetricFamily(
            "lumora_delivery_cache_misses", "Delivery cache misses.", value=misses
        )
        yield GaugeMetricFamily(
            "lumora_delivery_cache_hit_ratio",
            "Share of delivery lookups answered from memory.",
            value=hits / (hits + misses) if hits + misses else 0.0,
        )
    invalidations = getattr(delivery, "invalidations", None)
    if isinstance(invalidations, int):
        yield CounterMetricFamily(
            "lumora_delivery_cache_invalidations",
            "Times the delivery cache was dropped (a delivery-relevant change).",
            value=invalidations,
        )
    metrics_fn = getattr(delivery, "metrics", None)
    if callable(metrics_fn):
        values = metrics_fn()
        if isinstance(values, dict):
            for name, value in sorted(values.items()):
                if isinstance(value, int | float) and str(name).replace("_", "").isalnum():
                    yield GaugeMetricFamily(
                        f"lumora_delivery_{name}", f"Delivery cache: {name}.", value=value
                    )


class DatabaseFiguresCollector(Collector):
    """Cluster-wide statistics from the database, cached for ``DB_FIGURES_TTL`` seconds."""

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx
        self._cached: list[Metric] = []
        self._cached_at = 0.0

    def collect(self) -> Iterator[Metric]:
        """Yield the figures (re-read when the cache is stale)."""
        if time.monotonic() - self._cached_at > DB_FIGURES_TTL:
            self._cached = self._read()
            self._cached_at = time.monotonic()
        yield from self._cached

    def _read(self) -> list[Metric]:
        settings = self._ctx.settings
        thresholds = health_thresholds(settings)
        now = utcnow()
        with self._ctx.session() as session:
            session.connection(execution_options={"readonly": True})  # no write lock
            slugs = dict(session.execute(select(Project.id, Project.slug)).all())
            checks = GaugeMetricFamily(
                "lumora_stats_checks", "Checks answered (all processes).", labels=["project"]
            )
            for pid, n in session.execute(
                select(StatCounter.project_id, func.sum(StatCounter.value))
                .where(StatCounter.metric == "checks")
                .group_by(StatCounter.project_id)
            ):
                if pid in slugs:
                    checks.add_metric([slugs[pid]], float(n or 0))
            asset_bytes = GaugeMetricFamily(
                "lumora_stats_asset_bytes", "Asset bytes served (all processes)."
            )
            total_bytes = session.execute(
                select(func.sum(StatCounter.value)).where(StatCounter.metric == "asset_bytes")
            ).scalar()
            asset_bytes.add_metric([], float(total_bytes or 0))
            outcomes = GaugeMetricFamily(
                "lumora_stats_device_outcomes",
                "Devices per update outcome (download, install, launch_success, ...).",
                labels=["project", "outcome"],
            )
            for pid, fact, n in session.execute(
                counted_facts(
                    DeviceUpdateFact.project_id, DeviceUpdateFact.fact, func.count()
                ).group_by(DeviceUpdateFact.project_id, DeviceUpdateFact.fact)
            ):
                if pid in slugs:
                    outcomes.add_metric([slugs[pid], fact], float(n))
            active = GaugeMetricFamily(
                "lumora_stats_active_devices",
                "Devices seen within the window.",
                labels=["project", "window"],
            )
            for days in ACTIVE_WINDOWS:
                for pid, n in session.execute(
                    select(DeviceState.project_id, func.count())
                    .where(DeviceState.last_seen >= now - timedelta(days=days))
                    .group_by(DeviceState.project_id)
                ):
                    if pid in slugs:
                        active.add_metric([slugs[pid], f"{days}d"], float(n))
            published = GaugeMetricFamily(
                "lumora_updates_published",
                "Updates published (one per platform).",
                labels=["project"],
            )
            for pid, n in session.execute(
                select(Update.project_id, func.count()).group_by(Update.project_id)
            ):
                if pid in slugs:
                    published.add_metric([slugs[pid]], float(n))
            groups = GaugeMetricFamily(
                "lumora_publishes", "Publish operations (update groups).", labels=["project"]
            )
            for pid, n in session.execute(
                select(UpdateGroup.project_id, func.count()).group_by(UpdateGroup.project_id)
            ):
                if pid in slugs:
                    groups.add_metric([slugs[pid]], float(n))
            launches = health_counts(session, thresholds)
            flagged = GaugeMetricFamily(
                "lumora_updates_flagged",
                "Updates whose launch-failure rate crosses the health threshold.",
                labels=["project"],
            )
            per_project: dict[str, int] = {}
            for uid, counts in launches.items():
                if not evaluate_health(*counts, thresholds).flagged:
                    continue
                owner = session.scalar(select(Update.project_id).where(Update.id == uid))
                if owner is not None and owner in slugs:
                    per_project[slugs[owner]] = per_project.get(slugs[owner], 0) + 1
            for slug, n in sorted(per_project.items()):
                flagged.add_metric([slug], float(n))
        return [checks, asset_bytes, outcomes, active, published, groups, flagged]


def register_collectors(registry: CollectorRegistry, ctx: AppContext) -> None:
    """Register every Lumora collector beside the request figures in ``registry``."""
    registry.register(ProcessCollector(ctx))
    registry.register(DatabaseFiguresCollector(ctx))


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics`` in the Prometheus text format, for an all-projects key only: the
    figures name every project (401 without a key, 403 for a project-scoped one). A scraper
    without a key reads them on ``LUMORA_METRICS_BIND`` (``MetricsListener``)."""
    principal = await run_in_threadpool(current_principal, request)
    principal.require_all_projects()
    registry = app_context(request).metrics
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=PROMETHEUS_CONTENT_TYPE, headers={"cache-control": "no-store"})


class MetricsListener:
    """``GET /metrics`` without a key on a separate address (``LUMORA_METRICS_BIND``), meant
    for a private network: a minimal HTTP/1.0-style server (one request per connection,
    headers bounded in size and time) on the worker's event loop. Every worker binds it
    with ``SO_REUSEPORT``, like the main port, so a scrape reaches one worker's request
    figures; the statistics figures are cluster-wide whichever answers."""

    HEADER_TIMEOUT = 5.0
    MAX_HEAD_BYTES = 16 * 1024

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._registry = registry
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen (``OSError`` when the address cannot be bound: the worker fails loudly)."""
        self._server = await asyncio.start_server(
            self._handle,
            self._host,
            self._port,
            reuse_port=True,
            limit=self.MAX_HEAD_BYTES,
        )

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.HEADER_TIMEOUT)
            method, _, rest = head.partition(b" ")
            target = rest.partition(b" ")[0].partition(b"?")[0]
            if method in (b"GET", b"HEAD") and target == b"/metrics":
                body = await run_in_threadpool(generate_latest, self._registry)
                status, content_type = b"200 OK", PROMETHEUS_CONTENT_TYPE.encode()
            else:
                body, status, content_type = b"not found\n", b"404 Not Found", b"text/plain"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type
                + b"\r\ncontent-length: " + str(len(body)).encode()
                + b"\r\ncache-control: no-store\r\nconnection: close\r\n\r\n"
                + (body if method != b"HEAD" else b"")
            )  # fmt: skip
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a silent, oversized or vanished client: just close
        finally:
            writer.close()
