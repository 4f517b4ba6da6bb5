"""The ASGI application factory.

``create_app(settings)`` wires the pieces together: database (migrated at start), blob store,
the device-facing routes (hot path, no database query per request in steady state), the
management API under ``/api/v1``, health, metrics and the dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from lumora_ota import __version__
from lumora_ota.domain.ratelimit import RateLimit
from lumora_ota.server import (
    apidocs,
    dashboard,
    device,
    health,
    management,
    observability,
    openapi_problems,
)
from lumora_ota.server.context import AppContext
from lumora_ota.server.device.cache import DeliveryCache
from lumora_ota.server.device.edge import DeviceEdge
from lumora_ota.server.device.edge_rsgi import RsgiEdge
from lumora_ota.server.device.patches import PatchIndex
from lumora_ota.server.lifecycle import Lifecycle
from lumora_ota.server.management.throttle import FailedAuthThrottle
from lumora_ota.server.metrics import RequestMetrics, register_collectors
from lumora_ota.server.middleware import (
    DeviceRateLimiter,
    DeviceRateLimitMiddleware,
    SecurityHeadersMiddleware,
)
from lumora_ota.server.problems import install_problem_handlers
from lumora_ota.server.request_guard import RequestGuardMiddleware
from lumora_ota.server.rsgi import RsgiBridge, RsgiProtocol, RsgiScope
from lumora_ota.settings import Settings
from lumora_ota.stats import StatsRecorder
from lumora_ota.store.blobs import open_blob_store
from lumora_ota.store.db import create_db_engine, make_session_factory, migrate
from lumora_ota.store.digests import fill_missing_md5
from lumora_ota.store.patches import PatchPolicy, PatchWorker
from lumora_ota.store.variants import VariantWorker

log = logging.getLogger("lumora_ota.server")

API_DESCRIPTION = """
Lumora OTA: self-hosted over-the-air updates.

* **Device endpoints** (no key): the Expo Updates v1 manifest, the Lumora check API, assets
  and client events.
* **Management API** (`Authorization: Bearer <key>`): projects, deployments (channels),
  publishing, updates, rollbacks, keys, code signing and statistics.

Errors are RFC 9457 `application/problem+json` documents.
"""


def settle_garbage_collector() -> None:
    """Exempt everything alive after start-up (modules, app, settings) from cyclic GC scans.

    Under load with random device ids the statistics keep many new objects alive, so Python's
    full collections run every second or so; each one walked the whole heap, mostly the
    imported modules (about 90 ms: the checks' p99 latency). Frozen objects are still freed
    by reference counting; only cycles among them would stay, and start-up creates none
    worth reclaiming (collected first).
    """
    gc.collect()
    gc.freeze()


class LumoraApp(FastAPI):
    """The FastAPI application with the device edge (``server/device/edge.py``) in front:
    the commonest device requests are answered before the framework's layers. With trusted
    proxies configured, their forwarding headers are applied first (``front``), so the edge's
    rate limits and everything behind it see the device's address."""

    edge: DeviceEdge | None = None
    front: ASGIApp | None = None
    rsgi: RsgiBridge | None = None  # granian's RSGI entry (``server/rsgi.py``)

    async def __rsgi__(self, scope: RsgiScope, protocol: RsgiProtocol) -> None:
        await self._rsgi().__rsgi__(scope, protocol)

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._rsgi().__rsgi_init__(loop)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._rsgi().__rsgi_del__(loop)

    def _rsgi(self) -> RsgiBridge:
        if self.rsgi is None:
            edge = self.edge
            # The manifest and check answered natively unless something must see the ASGI
            # scope first (trusted proxies' forwarding headers, device rate limits).
            native = edge is not None and self.front is edge and not edge.rate_limited
            self.rsgi = RsgiBridge(
                self,
                native=RsgiEdge(edge) if native and edge is not None else None,
                framework=self.framework,
            )
        return self.rsgi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.front
        if front is not None and scope["type"] == "http":
            await front(scope, receive, send)  # hands everything else to ``framework``
        else:
            await super().__call__(scope, receive, send)

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The application without the edge: FastAPI and every middleware."""
        await super().__call__(scope, receive, send)


def build_context(settings: Settings) -> AppContext:
    """Every collaborator of the server, made once, typed (nothing touches the database)."""
    engine = create_db_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    blobs = open_blob_store(settings.resolved_storage_url)
    delivery = DeliveryCache(
        engine,
        sessions,
        poll_interval=settings.cache_poll_interval,
        signing_keys_dir=settings.resolved_signing_keys_dir,
    )
    auth_limit = RateLimit.parse(settings.auth_failure_limit)
    metrics = CollectorRegistry()
    ctx = AppContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        blobs=blobs,
        delivery=delivery,
        patches=PatchIndex(sessions, blobs, delivery),
        stats=StatsRecorder(
            engine,
            flush_interval=settings.stats_flush_interval,
            new_devices_per_source=settings.stats_new_devices_per_source,
        ),
        metrics=metrics,
        request_metrics=RequestMetrics(metrics),
        auth_throttle=FailedAuthThrottle(auth_limit) if auth_limit is not None else None,
        variant_worker=VariantWorker(blobs, sessions),
        patch_worker=PatchWorker(
            blobs,
            sessions,
            PatchPolicy(
                bases=settings.patch_bases,
                max_ratio=settings.patch_max_ratio,
                max_bundle_bytes=settings.patch_max_bundle_bytes,
                memory_budget=settings.patch_memory_bytes,
            ),
        ),
    )
    register_collectors(metrics, ctx)
    return ctx


def create_app(settings: Settings) -> LumoraApp:
    """Build the application for ``settings``. Nothing touches the database until start."""
    ctx = build_context(settings)
    engine = ctx.engine
    lifecycle = Lifecycle()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        migrate(engine, ctx.blobs)
        # Blobs a migration could not read (run without the blob store) get their md5 now,
        # before any device is answered.
        with engine.begin() as conn:
            fill_missing_md5(conn, ctx.blobs)
        await lifecycle.start()
        settle_garbage_collector()
        try:
            yield
        finally:
            await lifecycle.stop()
            engine.dispose()

    app = LumoraApp(
        title="Lumora OTA",
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served locally under a CSP: server/apidocs.py
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.ctx = ctx
    install_problem_handlers(app)
    health.install(app, ctx, lifecycle)
    apidocs.install(app)
    observability.install(app, ctx, lifecycle)  # stats recorder, events, /metrics
    responders = device.install(app, ctx, lifecycle)
    management.install(app, ctx, lifecycle)
    dashboard.install(app, ctx, lifecycle)
    openapi_problems.install(app)  # error answers documented as problem+json
    per_ip = RateLimit.parse(settings.rate_limit_per_ip)
    per_client = RateLimit.parse(settings.rate_limit_per_client)
    limiter = None
    if per_ip or per_client:
        limiter = DeviceRateLimiter(per_ip=per_ip, per_client=per_client)
        app.add_middleware(DeviceRateLimitMiddleware, limiter=limiter)
    app.edge = DeviceEdge(
        app.framework,
        ctx=ctx,
        expo=responders.expo,
        check=responders.check,
        files=responders.files,
        metrics=ctx.request_metrics,
        limiter=limiter,
    )
    ctx.edge = app.edge  # /metrics reads how many requests it answered
    app.front = app.edge
    if settings.trusted_proxies:
        # uvicorn's middleware: X-Forwarded-For read right to left, trusted hops skipped.
        # Imported here only: uvicorn's package costs a granian worker memory otherwise.
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app.front = cast(
            ASGIApp,
            ProxyHeadersMiddleware(
                cast(Any, app.edge), trusted_hosts=list(settings.trusted_proxies)
            ),
        )
    app.add_middleware(RequestGuardMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    return app


def create_app_from_env() -> LumoraApp:
    """Factory for ASGI servers: settings come from ``LUMORA_*`` variables."""
    return create_app(Settings.from_env())
