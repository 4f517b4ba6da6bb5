"""``GET /health``: 200 once the database and the blob store answer, 503 when one is down.

A dependency that answers but not fully (a SQLite database locked by another process or
read-only: devices are still served, publishing is not) makes the status "degraded" with
200, so load balancers keep an instance that still serves devices.

Anonymous callers (load balancers, uptime checks) get the status only; the version, the
instance name, the process id and each dependency's check are for a valid API key (any
role): they tell an attacker which release and which hosts to aim at.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from lumora_ota import __version__
from lumora_ota.api_models import HealthAnswer
from lumora_ota.server.context import AppContext
from lumora_ota.server.dashboard.sessions import SESSION_COOKIE
from lumora_ota.server.lifecycle import Lifecycle
from lumora_ota.server.management.auth import current_principal
from lumora_ota.store.db import is_sqlite, sqlite_write_problem
from lumora_ota.store.outage import database_outage, describe


def _probe(name: str, fn: Callable[[], str | None]) -> dict[str, Any]:
    """Run ``fn``: "down" when it raises, "degraded" when it returns why (usable, but not
    fully: a SQLite database that cannot be written right now), "ok" otherwise."""
    started = time.perf_counter()
    try:
        problem = fn()
    except Exception as exc:
        reason = database_outage(exc) or describe(exc)
        return {"name": name, "status": "down", "error": type(exc).__name__, "detail": reason}
    latency = round((time.perf_counter() - started) * 1000, 2)
    if problem is not None:
        return {"name": name, "status": "degraded", "error": problem, "latencyMs": latency}
    return {"name": name, "status": "ok", "latencyMs": latency}


def check_dependencies(ctx: AppContext) -> list[dict[str, Any]]:
    """Probe each dependency once; never raises."""

    def db() -> str | None:
        with ctx.engine.connect().execution_options(readonly=True) as conn:
            conn.execute(text("SELECT revision FROM delivery_state WHERE id = 1")).scalar_one()
            conn.rollback()
        # Devices are answered from memory and reads never wait for writers, but publishing
        # and statistics need to write: say so when another process holds the write lock.
        return sqlite_write_problem(ctx.engine) if is_sqlite(ctx.engine) else None

    def blobs() -> None:
        ctx.blobs.check()

    return [
        {**_probe("database", db), "backend": ctx.engine.dialect.name},
        {**_probe("blobStore", blobs), "backend": type(ctx.blobs).__name__},
    ]


def install(app: FastAPI, ctx: AppContext, lifecycle: Lifecycle) -> None:
    """Add ``/health``."""

    @app.get(
        "/health",
        tags=["health"],
        summary="Liveness and dependency health",
        # 200 only: a 503 carries the same shape, but the document declares every error
        # status as a problem document (openapi_problems.py), so it is not listed.
        response_model=HealthAnswer,
    )
    async def get_health(request: Request) -> JSONResponse:
        """``{"status": "ok"|"degraded"}``; with an API key also ``version``, ``instance``,
        ``pid`` and ``checks``. 401 for a wrong key."""
        detailed = "authorization" in request.headers or SESSION_COOKIE in request.cookies
        if detailed:
            await run_in_threadpool(current_principal, request)
        checks = await run_in_threadpool(check_dependencies, ctx)
        ok = all(c["status"] == "ok" for c in checks)
        # Degraded (not down) still serves devices: stay in the load balancer (200).
        down = any(c["status"] == "down" for c in checks)
        body: dict[str, Any] = {"status": "ok" if ok else "degraded"}
        if detailed:
            body.update(
                version=__version__,
                instance=ctx.settings.instance_name,
                pid=os.getpid(),
                checks=checks,
            )
        return JSONResponse(
            body, status_code=503 if down else 200, headers={"cache-control": "no-store"}
        )
