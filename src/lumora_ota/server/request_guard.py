"""Refuse request targets no route can mean: a NUL character in the path or query.

Path and query values reach database lookups (project slugs, update ids); PostgreSQL text
cannot hold NUL and would fail the query, and on a file system NUL truncates names. A 400
problem here keeps every route from having to check.
"""

from __future__ import annotations

import json
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send


def target_has_nul(scope: Scope) -> bool:
    """Whether the (decoded) path or the percent-decoded query string holds a NUL byte."""
    path: str = scope.get("path", "")
    if "\x00" in path:
        return True
    query: bytes = scope.get("query_string", b"")
    return b"\x00" in query or (b"%" in query and b"\x00" in unquote_to_bytes(query))


class RejectNulMiddleware:
    """Answers 400 problem+json to any request whose target contains NUL."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not target_has_nul(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Bad Request",
                "status": 400,
                "detail": "the request path or query contains a NUL character",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
