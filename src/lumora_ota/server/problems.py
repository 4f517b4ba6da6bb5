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
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

PROBLEM_CONTENT_TYPE = "application/problem+json"
log = logging.getLogger("lumora_ota.server")


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

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "internal server error", instance=request.url.path)

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(RecursionError, on_recursion)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(Exception, on_unexpected)
