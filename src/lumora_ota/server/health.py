"""``GET /health``: 200 once the database and the blob store answer, 503 otherwise.

Anonymous callers (load balancers, uptime checks) get the status only; the version, the
instance name, the process id and each dependency's check are for a valid API key (any
role): they tell an attacker which release and which hosts to aim at.
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import FastAPI, Request
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from lumora_ota import __version__
from lumora_ota.server.context import AppContext
from lumora_ota.server.dashboard.sessions import SESSION_COOKIE
from lumora_ota.server.lifecycle import Lifecycle
from lumora_ota.server.management.auth import current_principal


def _probe(name: str, fn: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        fn()
    except Exception as exc:
        return {"name": name, "status": "down", "error": type(exc).__name__}
    return {
        "name": name,
        "status": "ok",
        "latencyMs": round((time.perf_counter() - started) * 1000, 2),
    }


def check_dependencies(ctx: AppContext) -> list[dict[str, Any]]:
    """Probe each dependency once; never raises."""

    def db() -> None:
        with ctx.engine.connect().execution_options(readonly=True) as conn:
            conn.execute(text("SELECT revision FROM delivery_state WHERE id = 1")).scalar_one()
            conn.rollback()

    return [
        {**_probe("database", db), "backend": ctx.engine.dialect.name},
        {**_probe("blobStore", ctx.blobs.check), "backend": type(ctx.blobs).__name__},
    ]


def install(app: FastAPI, ctx: AppContext, lifecycle: Lifecycle) -> None:
    """Add ``/health``."""

    @app.get("/health", tags=["health"], summary="Liveness and dependency health")
    async def get_health(request: Request) -> JSONResponse:
        """``{"status": "ok"|"degraded"}``; with an API key also ``version``, ``instance``,
        ``pid`` and ``checks``. 401 for a wrong key."""
        detailed = "authorization" in request.headers or SESSION_COOKIE in request.cookies
        if detailed:
            await run_in_threadpool(current_principal, request)
        checks = await run_in_threadpool(check_dependencies, ctx)
        ok = all(c["status"] == "ok" for c in checks)
        body: dict[str, Any] = {"status": "ok" if ok else "degraded"}
        if detailed:
            body.update(
                version=__version__,
                instance=ctx.settings.instance_name,
                pid=os.getpid(),
                checks=checks,
            )
        return JSONResponse(
            body, status_code=200 if ok else 503, headers={"cache-control": "no-store"}
        )
