"""The management API under ``/api/v1``: one router module per resource."""

from __future__ import annotations

from fastapi import FastAPI

from lumora_ota.server.context import AppContext
from lumora_ota.server.lifecycle import Lifecycle
from lumora_ota.server.management import (
    assets,
    audit,
    delta,  # delta updates (issue #10)
    deployments,
    devices,  # device pins and timelines (issue 19)
    embedded,  # delta updates (issue #10)
    keys,
    plans,  # rollout plans (issue 19)
    projects,
    publish,
    signing,
    stats,
    updates,
    webhooks,  # webhooks (issue 19)
)

API_PREFIX = "/api/v1"


def install(app: FastAPI, ctx: AppContext, lifecycle: Lifecycle) -> None:
    """Add every management router, and any start-up work they need."""
    for module in (projects, deployments, assets, publish, updates, keys, signing, stats, audit):
        app.include_router(module.router, prefix=API_PREFIX)
    for module in (embedded, delta):  # delta updates (issue #10)
        app.include_router(module.router, prefix=API_PREFIX)
    keys.install_bootstrap(ctx, lifecycle)
    publish.install(ctx, lifecycle)
    embedded.install(ctx, lifecycle)  # the delta-patch worker (issue #10)
    app.include_router(plans.router, prefix=API_PREFIX)  # rollout plans (issue 19)
    plans.install(ctx, lifecycle)
    app.include_router(webhooks.router, prefix=API_PREFIX)  # webhooks (issue 19)
    webhooks.install(ctx, lifecycle)
    app.include_router(devices.router, prefix=API_PREFIX)  # issue 19
