"""RFC 9457 problem details: every client error leaves the API as ``application/problem+json``.

``Problem`` is the one renderer of problem documents for the whole server: the exception
handler ``install_problem_handlers`` registers (``ProblemError``, Starlette HTTP errors,
validation errors, outages, anything unexpected: ``problem_for``), the device edge, the
device rate limiter (429) and the request guard (400/431) all render through it, so no
request ever sees a traceback and every document has the same shape.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Send

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


@dataclass(frozen=True)
class Problem:
    """One problem document before rendering: status, detail, title, ``type``, extension
    members and the answer's extra headers. ``render`` is the one way a problem leaves the
    server (exception handlers, the device edge, the rate limiter, the request guard)."""

    status: int
    detail: str
    title: str | None = None
    type: str = "about:blank"
    headers: Mapping[str, str] = field(default_factory=dict)
    extensions: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, exc: ProblemError) -> Problem:
        """The problem a ``ProblemError`` carries."""
        return cls(exc.status, exc.detail, exc.title, exc.type, exc.headers, exc.extensions)

    def document(self, instance: str | None = None) -> dict[str, Any]:
        """The RFC 9457 document (``instance``: the request path)."""
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title or HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extensions)
        return body

    def render(self, instance: str | None = None) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """The encoded body and the raw headers (content type first, then ``headers``;
        no content length) of the answer."""
        body = json.dumps(
            self.document(instance), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8")
        raw = [(b"content-type", PROBLEM_CONTENT_TYPE.encode())]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        return body, raw

    def response(self, instance: str | None = None) -> Response:
        """The answer as a Starlette response."""
        body, raw = self.render(instance)
        response = Response(body, status_code=self.status)
        response.raw_headers = [*raw, (b"content-length", str(len(body)).encode())]
        return response

    async def send(self, send: Send, instance: str | None = None) -> None:
        """Send the answer on a plain ASGI ``send``."""
        body, raw = self.render(instance)
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> Response:
    """A ``application/problem+json`` response."""
    return Problem(status, detail, title, type_, headers or {}, extensions).response(instance)


def not_found(what: str) -> ProblemError:
    """A 404 for an unknown (or invisible to this key) object."""
    return ProblemError(404, f"{what} not found")


def _validation_detail(
    exc: RequestValidationError | ValidationError,
) -> tuple[str, list[dict[str, Any]]]:
    errors: list[dict[str, Any]] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        errors.append({"location": loc, "message": str(err.get("msg", "invalid"))})
    first = errors[0] if errors else {"location": "", "message": "invalid request"}
    where = f"{first['location']}: " if first["location"] else ""
    return f"{where}{first['message']}", errors


def _unavailable(what: str, reason: str) -> Problem:
    _outage_log.warning(f"503 {what}", "%s is unavailable (%s): answering 503", what, reason)
    return Problem(
        503,
        f"{what} is unavailable ({reason})",
        "Dependency unavailable",
        headers={"retry-after": str(RETRY_AFTER_SECONDS)},
        extensions={"dependency": what},
    )


def _full(what: str) -> Problem:
    _outage_log.warning(f"507 {what}", "%s is out of space: answering 507", what)
    return Problem(
        507,
        f"{what} on the server is out of space; nothing was stored",
        "Insufficient storage",
        extensions={"dependency": what},
    )


def problem_for(exc: BaseException, database: str = "the database") -> Problem | None:
    """The problem document answering ``exc``, or None for an unexpected error (the caller
    logs it: a bug, answered 500). ``database`` names the database in outage answers."""
    if isinstance(exc, ProblemError):
        return Problem.of(exc)
    if isinstance(exc, StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return Problem(exc.status_code, detail, headers=dict(exc.headers or {}))
    if isinstance(exc, (RequestValidationError, ValidationError)):
        detail, errors = _validation_detail(exc)
        return Problem(422, detail, "Invalid request", extensions={"errors": errors})
    if isinstance(exc, RecursionError):
        return Problem(400, "JSON nested too deeply", "Invalid JSON")
    if isinstance(exc, ClientDisconnect):
        # The client went away mid-body: nobody reads this answer, and it is no server error.
        return Problem(400, "the request body was cut off")
    if isinstance(exc, DependencyUnavailable):
        return _unavailable(exc.what, exc.reason)
    if isinstance(exc, StorageFull):
        return _full(exc.what)
    if isinstance(exc, SQLAlchemyError):
        if is_no_space(exc):
            return _full(database)
        reason = database_outage(exc)
        return None if reason is None else _unavailable(database, reason)
    if isinstance(exc, OSError) and is_no_space(exc):
        return _full("the storage")
    return None


INTERNAL_ERROR = Problem(500, "internal server error")


def install_problem_handlers(app: FastAPI) -> None:
    """Register the handler that renders every error as a problem document."""

    async def on_exception(request: Request, exc: Exception) -> Response:
        if isinstance(exc, ClientDisconnect):
            log.info("client disconnected during %s %s", request.method, request.url.path)
        problem = problem_for(exc, _database_name(request))
        if problem is None:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            problem = INTERNAL_ERROR
        return problem.response(request.url.path)

    for kind in (
        ProblemError,
        StarletteHTTPException,
        RequestValidationError,
        RecursionError,
        ClientDisconnect,
        DependencyUnavailable,
        StorageFull,
        SQLAlchemyError,
        OSError,
        Exception,
    ):
        app.add_exception_handler(kind, on_exception)


def _database_name(request: Request) -> str:
    ctx = getattr(request.app.state, "ctx", None)
    engine = getattr(ctx, "engine", None)
    return database_name(engine) if engine is not None else "the database"
