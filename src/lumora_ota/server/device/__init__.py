"""Device routes — the hot path: Expo manifest, Lumora check, assets — the delivery cache
they answer from (no database query per request in steady state), and the device edge that
answers the common requests ahead of the framework."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from lumora_ota.server.context import AppContext
from lumora_ota.server.device import assets, check, expo
from lumora_ota.server.device.cors import DeviceCORSMiddleware
from lumora_ota.server.lifecycle import Lifecycle


@dataclass(frozen=True)
class DeviceResponders:
    """What answers device requests, shared by the routes and the device edge."""

    expo: expo.ExpoResponder
    check: check.CheckResponder
    files: assets.AssetFiles


def install(app: FastAPI, ctx: AppContext, lifecycle: Lifecycle) -> DeviceResponders:
    """Add the device routes, CORS for them and the delivery cache with its poller; returns
    the responders behind the routes (for the device edge)."""
    cache = ctx.delivery
    cache.watch_local_commits()
    lifecycle.on_start(cache.start)
    lifecycle.on_stop(cache.stop)
    expo_responder = expo.ExpoResponder(ctx, cache)
    check_responder = check.CheckResponder(ctx, cache)
    files = assets.AssetFiles(
        ctx.blobs,
        memory_bytes=ctx.settings.asset_memory_bytes,
        file_bytes=ctx.settings.asset_memory_file_bytes,
        accel_prefix=ctx.settings.accel_redirect_prefix,
    )
    routes_before = len(app.router.routes)
    app.include_router(expo.build_router(expo_responder))
    app.include_router(check.build_router(check_responder))
    app.include_router(assets.build_router(ctx, files))
    # The router tries routes in order and devices make nearly all requests: match theirs
    # first. No other route's path overlaps a device path, so the answers are the same.
    device_routes = app.router.routes[routes_before:]
    del app.router.routes[routes_before:]
    app.router.routes[0:0] = device_routes
    app.add_middleware(DeviceCORSMiddleware, allow_origins=ctx.settings.cors_origins)
    return DeviceResponders(expo_responder, check_responder, files)
