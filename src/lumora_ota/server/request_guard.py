"""Refuse requests no route can mean, before any route sees them.

* A NUL character in the path or query (400): path and query values reach database lookups
  (project slugs, update ids); PostgreSQL text cannot hold NUL and would fail the query, and
  on a file system NUL truncates names.
* Request headers over ``MAX_HEADER_BYTES`` in total (431): no client of this API needs more,
  and the HTTP server in front may accept several hundred KiB.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from lumora_ota.server.problems import Problem

MAX_HEADER_BYTES = 32 * 1024


def target_has_nul(scope: Scope) -> bool:
    """Whether the (decoded) path or the percent-decoded query string holds a NUL byte."""
    path: str = scope.get("path", "")
    if "\x00" in path:
        return True
    query: bytes = scope.get("query_string", b"")
    return b"\x00" in query or (b"%" in query and b"\x00" in unquote_to_bytes(query))


def header_bytes(scope: Scope) -> int:
    """The size of the request's header names and values."""
    return sum(len(name) + len(value) for name, value in scope.get("headers", ()))


class RequestGuardMiddleware:
    """Answers 400 (NUL in the target) or 431 (headers too large) as problem+json."""

    def __init__(self, app: ASGIApp, *, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if target_has_nul(scope):
                await _refuse(send, 400, "the request path or query contains a NUL character")
                return
            if header_bytes(scope) > self.max_header_bytes:
                detail = f"the request headers exceed {self.max_header_bytes} bytes"
                await _refuse(send, 431, detail)
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, detail: str) -> None:
    await Problem(status, detail).send(send)
