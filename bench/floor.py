"""Two minimal ASGI apps that return the same 12 KB prebuilt body, to measure how far the
server stack is from what the machine can do (see docs/BENCHMARKS.md):

    granian --interface asgi --host 127.0.0.1 --port 18771 --workers 1 bench.floor:raw_app
    granian --interface asgi --host 127.0.0.1 --port 18771 --workers 1 bench.floor:fastapi_app
    wrk -t1 -c50 -d6s --latency http://127.0.0.1:18771/m
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response

BODY = b"x" * 12_000
CONTENT_TYPE = "multipart/mixed; boundary=abc"
_HEADERS = [(b"content-type", CONTENT_TYPE.encode()), (b"cache-control", b"private, max-age=0")]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


async def raw_app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """A bare ASGI callable: the floor of per-request Python cost."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": BODY})


fastapi_app = FastAPI()


@fastapi_app.get("/m")
async def body() -> Response:
    """The same bytes through FastAPI's routing, with no middleware."""
    return Response(BODY, media_type=CONTENT_TYPE)
