"""The web dashboard at ``/dashboard``: static HTML/CSS/JS from this package (no CDN) and the
session endpoints. The page's script calls the management API with the session cookie (see
``sessions``), so the dashboard has no data endpoints of its own.

Routes: ``GET /dashboard`` (the page), ``GET /dashboard/static/{file}``,
``POST /dashboard/session`` (sign in with ``{"apiKey": ...}``), ``GET /dashboard/session``
(who is signed in, and the CSRF token), ``DELETE /dashboard/session`` (sign out).
Every response carries a strict CSP (no inline script), ``frame-ancestors 'none'``,
``nosniff`` and ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from lumora_ota.server.context import AppContext, app_context
from lumora_ota.server.dashboard.sessions import (
    SESSION_COOKIE,
    CookieAuthenticator,
    DashboardSession,
    SessionSigner,
    load_or_create_secret,
    origin_of,
    same_origin,
)
from lumora_ota.server.lifecycle import Lifecycle
from lumora_ota.server.management.throttle import source_of, throttle_of
from lumora_ota.server.problems import ProblemError
from lumora_ota.store.apikeys import find_usable_key
from lumora_ota.store.models import ApiKey

STATIC_DIR = Path(__file__).parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


class SignIn(BaseModel):
    """Body of ``POST /dashboard/session``."""

    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(alias="apiKey", min_length=1, max_length=500)


def load_static(directory: Path) -> dict[str, tuple[bytes, str, str]]:
    """Every file of ``directory`` as ``name -> (bytes, content type, etag)``."""
    files: dict[str, tuple[bytes, str, str]] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in CONTENT_TYPES:
            data = path.read_bytes()
            etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
            files[path.name] = (data, CONTENT_TYPES[path.suffix], etag)
    return files


def _headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**SECURITY_HEADERS, **(extra or {})}


class DashboardRoute(APIRoute):
    """A route whose every answer, errors included, carries the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler so responses and problems get ``SECURITY_HEADERS``."""
        handler = super().get_route_handler()

        async def with_headers(request: Request) -> Response:
            try:
                response = await handler(request)
            except ProblemError as exc:
                exc.headers = _headers(exc.headers)
                raise
            response.headers.update(SECURITY_HEADERS)
            return response

        return with_headers


def _authenticator(request: Request) -> CookieAuthenticator:
    auth = app_context(request).cookie_auth
    if auth is None:
        raise ProblemError(503, "the dashboard is starting")
    return auth


def _key_json(key: Any) -> dict[str, Any]:
    return {"id": key.id, "name": key.name, "role": key.role, "projectId": key.project_id}


def void_sessions(ctx: AppContext, session: DashboardSession) -> None:
    """Void every dashboard session of ``session``'s key issued until now (milliseconds
    past its issue time, so a sign-in later in the same millisecond is not voided)."""
    with ctx.sessions() as db:
        key = db.get(ApiKey, session.key_id)
        if key is not None:
            now_ms = max(int(time.time() * 1000), session.issued_at_ms)
            key.sessions_void_before_ms = max(key.sessions_void_before_ms or 0, now_ms)
            db.commit()


def build_router(files: dict[str, tuple[bytes, str, str]]) -> APIRouter:
    """The dashboard's routes, serving ``files`` from memory."""
    router = APIRouter(include_in_schema=False, route_class=DashboardRoute)

    def serve(name: str, request: Request, cache: str) -> Response:
        entry = files.get(name)
        if entry is None:
            raise ProblemError(404, "no such dashboard file")
        data, content_type, etag = entry
        headers = _headers({"etag": etag, "cache-control": cache})
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=content_type, headers=headers)

    @router.get("/dashboard")
    @router.get("/dashboard/")
    async def dashboard_page(request: Request) -> Response:
        return serve("index.html", request, "no-cache")

    @router.get("/dashboard/static/{name}")
    async def dashboard_file(name: str, request: Request) -> Response:
        return serve(name, request, "no-cache")

    @router.post("/dashboard/session")
    async def sign_in(body: SignIn, request: Request) -> Response:
        auth = _authenticator(request)
        if not same_origin(request, auth.public_origins):
            raise ProblemError(403, "sign-in from another origin")
        ctx = app_context(request)

        def check() -> dict[str, Any] | None:
            with ctx.sessions() as session:
                session.connection(execution_options={"readonly": True})  # no write lock
                key = find_usable_key(session, body.api_key.strip())
                return _key_json(key) if key is not None else None

        throttle = throttle_of(request)
        if throttle is not None:
            throttle.check(source_of(request))
        key = await asyncio.to_thread(check)
        if key is None:
            if throttle is not None:
                throttle.failed(source_of(request))
            raise ProblemError(401, "the API key is unknown, revoked or expired")
        cookie, session = auth.signer.issue(key["id"])
        response = JSONResponse(
            {"key": key, "csrfToken": auth.signer.csrf_token(session)},
            headers=_headers({"cache-control": "no-store"}),
        )
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=auth.signer.lifetime,
            path="/",
            httponly=True,
            samesite="strict",
            # Behind a TLS-terminating proxy the request looks like http; the public URL knows.
            secure=request.url.scheme == "https"
            or ctx.settings.resolved_public_url.startswith("https://"),
        )
        return response

    @router.get("/dashboard/session")
    async def whoami(request: Request) -> Response:
        auth = _authenticator(request)
        session = auth.session_of(request)
        ctx = app_context(request)

        def load() -> dict[str, Any] | None:
            from lumora_ota.store.apikeys import get_key, is_usable

            if session is None:
                return None
            with ctx.sessions() as db:
                db.connection(execution_options={"readonly": True})  # no write lock
                key = get_key(db, session.key_id)
                if key is None or not is_usable(key):
                    return None
                if session.voided_by(key.sessions_void_before_ms):
                    return None
                return _key_json(key)

        key = await asyncio.to_thread(load)
        headers = _headers({"cache-control": "no-store"})
        if key is None or session is None:
            return JSONResponse({"signedIn": False}, headers=headers)
        return JSONResponse(
            {"signedIn": True, "key": key, "csrfToken": auth.signer.csrf_token(session)},
            headers=headers,
        )

    @router.delete("/dashboard/session")
    async def sign_out(request: Request) -> Response:
        auth = _authenticator(request)
        session = auth(request)  # a session sign-out is a write: CSRF-checked
        if session is not None:
            # Void it on the server, so a copy of the cookie (and every other session of
            # this key issued until now) stops working, on every process at once.
            await asyncio.to_thread(void_sessions, app_context(request), session)
        response = Response(status_code=204, headers=_headers({"cache-control": "no-store"}))
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    return router


def install(app: FastAPI, ctx: AppContext, lifecycle: Lifecycle) -> None:
    """Add the dashboard routes; load the session secret at start."""

    async def start() -> None:
        secret = await asyncio.to_thread(load_or_create_secret, ctx.sessions)
        public = (origin_of(ctx.settings.resolved_public_url),)
        ctx.cookie_auth = CookieAuthenticator(SessionSigner(secret), public)

    lifecycle.on_start(start)
    app.include_router(build_router(load_static(STATIC_DIR)))
