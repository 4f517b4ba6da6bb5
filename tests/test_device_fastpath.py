"""The device fast path: the same endpoints as the FastAPI routes, without FastAPI's layers."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response

from lumora_ota.server.device.fastpath import DeviceFastPath, fast_routes
from lumora_ota.server.problems import ProblemError, install_problem_handlers

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def build_app(calls: list[str]) -> FastAPI:
    """An app with a manifest-like route, an asset route and routes the shortcut must skip."""
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(
        DeviceFastPath, routes=lambda: app.router.routes, exception_handlers=app.exception_handlers
    )
    router = APIRouter()

    @router.get("/api/v1/expo/{project}/manifest")
    async def manifest(project: str, request: Request) -> Response:
        calls.append(f"manifest {project} {request.headers.get('expo-platform')}")
        if project == "ghost":
            raise ProblemError(404, "project 'ghost' not found")
        if project == "boom":
            raise RuntimeError("unexpected")
        return Response(b"manifest of " + project.encode(), media_type="text/plain")

    @router.head("/api/v1/assets/{name}")
    @router.get("/api/v1/assets/{name}")
    async def asset(name: str, request: Request) -> Response:
        calls.append(f"{request.method} asset {name}")
        return Response(b"bytes", media_type="application/octet-stream")

    app.include_router(router)
    return app


def test_fast_routes_are_found_and_answer_like_fastapi() -> None:
    calls: list[str] = []
    app = build_app(calls)
    assert {r.path for r in fast_routes(app.router.routes)} == {
        "/api/v1/expo/{project}/manifest",
        "/api/v1/assets/{name}",
    }
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.get("/api/v1/expo/demo/manifest", headers={"expo-platform": "ios"})
        assert resp.status_code == 200 and resp.content == b"manifest of demo"
        assert client.head("/api/v1/assets/abc.js").status_code == 200
        assert client.get("/api/v1/assets/abc.js").content == b"bytes"
        # Errors take the application's handlers: problem+json, or the 500 layer.
        ghost = client.get("/api/v1/expo/ghost/manifest")
        assert ghost.status_code == 404
        assert ghost.headers["content-type"] == "application/problem+json"
        assert ghost.json()["detail"] == "project 'ghost' not found"
        assert client.get("/api/v1/expo/boom/manifest").status_code == 500
        # Not a fast route: FastAPI answers as before.
        assert client.post("/api/v1/expo/demo/manifest").status_code == 405
        assert client.get("/api/v1/expo/demo/other").status_code == 404
    assert calls[:3] == ["manifest demo ios", "HEAD asset abc.js", "GET asset abc.js"]


def test_routes_needing_fastapi_are_left_to_it() -> None:
    app = FastAPI()

    def dependency() -> str:
        return "x"

    with_query = APIRouter()

    @with_query.get("/api/v1/assets/{name}")
    async def asset(name: str, request: Request, size: int = 0) -> Response:
        return Response(b"")

    with_dependency = APIRouter(dependencies=[Depends(dependency)])

    @with_dependency.get("/api/v1/expo/{project}/manifest")
    async def manifest(project: str, request: Request) -> Response:
        return Response(b"")

    prefixed = APIRouter()

    @prefixed.get("/api/v1/assets/{name}")
    async def prefixed_asset(name: str, request: Request) -> Response:
        return Response(b"")

    app.include_router(with_query)
    app.include_router(with_dependency)
    app.include_router(prefixed, prefix="/v2")
    assert fast_routes(app.router.routes) == []


def test_unmatched_requests_pass_through() -> None:
    seen: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])

    shortcut = DeviceFastPath(inner, routes=lambda: [], exception_handlers={})

    async def call(path: str, method: str = "GET") -> None:
        scope = {"type": "http", "method": method, "path": path, "headers": []}
        await shortcut(scope, None, None)  # type: ignore[arg-type]

    asyncio.run(call("/api/v1/expo/x/manifest"))
    asyncio.run(call("/api/v1/projects"))
    asyncio.run(call("/api/v1/assets/a.js", "POST"))
    assert seen == ["/api/v1/expo/x/manifest", "/api/v1/projects", "/api/v1/assets/a.js"]
