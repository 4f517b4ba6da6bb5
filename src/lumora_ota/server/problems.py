"""RFC 9457 problem details: every client error leaves the API as ``application/problem+json``.

Handlers registered by ``install_problem_handlers`` turn ``ProblemError``, Starlette HTTP
errors, validation errors and anything unexpected into problem documents, so no request ever
sees a traceback.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

from lumora_ota.store.outage import (
    RETRY_AFTER_SECONDS,
    DependencyUnavailable,
    StorageFull,
    ThrottledLog,
    database_name,
    database_outage,
    is_no_space,
)

PROBLEM_CONTENT_TYPE = "application/problem+json"
log = logging.getLogger("lumora_ota.server")
_outage_log = ThrottledLog(log)


class ProblemError(Exception):
    """Raise to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.type = type_
        self.headers = headers or {}
        self.extensions = extensions


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """A ``application/problem+json`` response."""
    body: dict[str, Any] = {
        "type": type_,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_CONTENT_TYPE, headers=headers)


def not_found(what: str) -> ProblemError:
    """A 404 for an unknown (or invisible to this key) object."""
    return ProblemError(404, f"{what} not found")


def _validation_detail(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors: list[dict[str, Any]] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        errors.append({"location": loc, "message": str(err.get("msg", "invalid"))})
    first = errors[0] if errors else {"location": "", "message": "invalid request"}
    where = f"{first['location']}: " if first["location"] else ""
    return f"{where}{first['message']}", errors


def install_problem_handlers(app: FastAPI) -> None:
    """Register handlers that render every error as a problem document."""

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return problem_response(
            exc.status,
            exc.detail,
            title=exc.title,
            type_=exc.type,
            instance=request.url.path,
            headers=exc.headers,
            **exc.extensions,
        )

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem_response(
            exc.status_code,
            detail,
            instance=request.url.path,
            headers=dict(exc.headers or {}),
        )

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        detail, errors = _validation_detail(exc)
        return problem_response(
            422,
            detail,
            title="Invalid request",
            instance=request.url.path,
            errors=errors,
        )

    async def on_recursion(request: Request, exc: Exception) -> Response:
        return problem_response(
            400, "JSON nested too deeply", title="Invalid JSON", instance=request.url.path
        )

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        # The client went away mid-body: nobody reads this answer, and it is no server error.
        log.info("client disconnected during %s %s", request.method, request.url.path)
        return problem_response(400, "the request body was cut off", instance=request.url.path)

    def unavailable(request: Request, what: str, reason: str) -> Response:
        _outage_log.warning(f"503 {what}", "%s is unavailable (%s): answering 503", what, reason)
        return problem_response(
            503,
            f"{what} is unavailable ({reason})",
            title="Dependency unavailable",
            instance=request.url.path,
            headers={"retry-after": str(RETRY_AFTER_SECONDS)},
            dependency=what,
        )

    def full(request: Request, what: str) -> Response:
        _outage_log.warning(f"507 {what}", "%s is out of space: answering 507", what)
        return problem_response(
            507,
            f"{what} on the server is out of space; nothing was stored",
            title="Insufficient storage",
            instance=request.url.path,
            dependency=what,
        )

    async def on_dependency(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DependencyUnavailable)
        return unavailable(request, exc.what, exc.reason)

    async def on_storage_full(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StorageFull)
        return full(request, exc.what)

    async def on_database(request: Request, exc: Exception) -> Response:
        what = _database_name(request)
        if is_no_space(exc):
            return full(request, what)
        reason = database_outage(exc)
        if reason is not None:
            return unavailable(request, what, reason)
        return await on_unexpected(request, exc)

    async def on_os_error(request: Request, exc: Exception) -> Response:
        if is_no_space(exc):
            return full(request, "the storage")
        return await on_unexpected(request, exc)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "internal server error", instance=request.url.path)

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(RecursionError, on_recursion)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(DependencyUnavailable, on_dependency)
    app.add_exception_handler(StorageFull, on_storage_full)
    app.add_exception_handler(SQLAlchemyError, on_database)
    app.add_exception_handler(OSError, on_os_error)
    app.add_exception_handler(Exception, on_unexpected)


def _database_name(request: Request) -> str:
    ctx = getattr(request.app.state, "ctx", None)
    engine = getattr(ctx, "engine", None)
    return database_name(engine) if engine is not None else "the database"
