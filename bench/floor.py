"""Minimal ASGI apps, to measure how far the server stack is from what the machine can do
(see docs/BENCHMARKS.md). Two return the same 12 KB prebuilt body:

    granian --interface asgi --host 127.0.0.1 --port 18771 --workers 1 bench.floor:raw_app
    granian --interface asgi --host 127.0.0.1 --port 18771 --workers 1 bench.floor:fastapi_app
    wrk -t1 -c50 -d6s --latency http://127.0.0.1:18771/m

Two send a file named by ``LUMORA_FLOOR_FILE`` (e.g. the 1 MB asset's brotli bytes), from
memory or by ASGI ``pathsend``: the most any ASGI app can get out of the server for it.

    LUMORA_FLOOR_FILE=/tmp/asset.br granian ... bench.floor:file_memory_app
    LUMORA_FLOOR_FILE=/tmp/asset.br granian ... bench.floor:file_pathsend_app
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
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


def _file() -> tuple[str, bytes, list[tuple[bytes, bytes]]]:
    path = os.environ["LUMORA_FLOOR_FILE"]
    data = Path(path).read_bytes()
    headers = [
        (b"content-type", b"application/javascript"),
        (b"content-encoding", b"br"),
        (b"content-length", str(len(data)).encode()),
    ]
    return path, data, headers


async def file_memory_app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """The file's bytes, read once, sent from memory."""
    if scope["type"] != "http":
        return
    _, data, headers = _FILE
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def file_pathsend_app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """The file sent by the server itself (ASGI ``http.response.pathsend``)."""
    if scope["type"] != "http":
        return
    path, _, headers = _FILE
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.pathsend", "path": path})


_FILE = _file() if "LUMORA_FLOOR_FILE" in os.environ else ("", b"", [])


class RsgiFloor:
    """The same 12 KB body from a bare RSGI callable (granian's native interface, no ASGI
    message dicts): ``granian --interface rsgi ... bench.floor:rsgi_app``."""

    _headers = [(name.decode(), value.decode()) for name, value in _HEADERS]

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        protocol.response_bytes(200, self._headers, BODY)


rsgi_app = RsgiFloor()
