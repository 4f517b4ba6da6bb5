"""Device routes — the hot path: Expo manifest, Lumora check, assets — and the delivery cache
they answer from (no database query per request in steady state)."""

from __future__ import annotations

from fastapi import FastAPI

from lumora_ota.server.context import AppContext
from lumora_ota.server.device import assets, check, expo
from lumora_ota.server.device.cache import DeliveryCache
from lumora_ota.server.device.cors import DeviceCORSMiddleware
from lumora_ota.server.lifecycle import Lifecycle


def install(app: FastAPI, ctx: AppContext, lifecycle: Lifecycle) -> None:
    """Add the device routes, CORS for them and the delivery cache with its poller."""
    cache = DeliveryCache(ctx.engine, ctx.sessions, poll_interval=ctx.settings.cache_poll_interval)
    cache.watch_local_commits()
    ctx.components["delivery"] = cache
    lifecycle.on_start(cache.start)
    lifecycle.on_stop(cache.stop)
    routes_before = len(app.router.routes)
    app.include_router(expo.build_router(ctx, cache))
    app.include_router(check.build_router(ctx, cache))
    app.include_router(assets.build_router(ctx))
    # The router tries routes in order and devices make nearly all requests: match theirs
    # first. No other route's path overlaps a device path, so the answers are the same.
    device_routes = app.router.routes[routes_before:]
    del app.router.routes[routes_before:]
    app.router.routes[0:0] = device_routes
    app.add_middleware(DeviceCORSMiddleware, allow_origins=ctx.settings.cors_origins)
