"""The RSGI entry (``server/rsgi.py``) runs an ASGI application as granian's ASGI would.

Driven here with a recording stand-in for granian's RSGI protocol (the real server is in
``test_device_edge.py``: the same answers through ``lumora serve``): the ASGI scope built
from the RSGI one, the request body streamed in chunks then the disconnect, an answer in one
``response_bytes`` call, a streamed answer, a file by ``pathsend``, a 500 for an application
that fails before answering, and the ASGI lifespan run at worker start and stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.routing import Route

from lumora_ota.server.rsgi import RsgiBridge, asgi_scope


class Headers:
    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)


def rsgi_scope(
    method: str = "GET",
    path: str = "/",
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    client: str = "127.0.0.1:40000",
) -> Any:
    return SimpleNamespace(
        proto="http",
        http_version="1.1",
        server="127.0.0.1:3002",
        client=client,
        scheme="http",
        method=method,
        path=path,
        query_string=query,
        headers=Headers(headers or []),
    )


class ClientGone(RuntimeError):
    """Stands for granian's RSGIProtocolClosed."""


class Stream:
    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol

    async def send_bytes(self, data: bytes) -> None:
        if self.protocol.closed:
            raise ClientGone
        self.protocol.streamed.append(data)


class Protocol:
    """Records what the application sent, as granian's RSGI protocol would carry it."""

    def __init__(self, chunks: list[bytes] | None = None, *, closed: bool = False) -> None:
        self.chunks = chunks or []
        self.closed = closed
        self.gone = asyncio.Event()
        self.answers: list[tuple[Any, ...]] = []
        self.streamed: list[bytes] = []

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._body()

    async def _body(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    async def client_disconnect(self) -> None:
        await self.gone.wait()

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.answers.append(("bytes", status, headers, body))

    def response_file(self, status: int, headers: list[tuple[str, str]], file: str) -> None:
        self.answers.append(("file", status, headers, file))

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> Stream:
        self.answers.append(("stream", status, headers))
        return Stream(self)


def serve(app: Any, scope: Any, protocol: Protocol) -> None:
    asyncio.run(RsgiBridge(app).__rsgi__(scope, protocol))


def test_the_asgi_scope_carries_the_rsgi_request() -> None:
    state = {"shared": 1}
    scope = asgi_scope(
        rsgi_scope(
            "POST",
            "/a b/é",
            "x=%20y&z",
            [("host", "h"), ("x-a", "1"), ("x-a", "2")],
            client="[::1]:5000",
        ),
        state,
    )
    assert scope["type"] == "http" and scope["method"] == "POST"
    assert scope["path"] == "/a b/é"
    assert scope["raw_path"] == b"/a%20b/%C3%A9"
    assert scope["query_string"] == b"x=%20y&z"
    assert scope["headers"] == [(b"host", b"h"), (b"x-a", b"1"), (b"x-a", b"2")]
    assert scope["client"] == ("::1", 5000) and scope["server"] == ("127.0.0.1", 3002)
    assert scope["root_path"] == "" and "http.response.pathsend" in scope["extensions"]
    scope["state"]["shared"] = 2  # a request's state is its own copy of the lifespan's
    assert state == {"shared": 1}


def test_the_body_is_streamed_in_chunks_then_the_disconnect_is_awaited() -> None:
    received: list[dict[str, Any]] = []
    protocol = Protocol([b"ab", b"cd"])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            received.append(message)
            if not message.get("more_body"):
                break
        protocol.gone.set()
        received.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x", b"1")]})
        await send({"type": "http.response.body", "body": b"ok"})

    serve(app, rsgi_scope("POST"), protocol)
    assert [m.get("body") for m in received[:3]] == [b"ab", b"cd", b""]
    assert [m.get("more_body") for m in received[:3]] == [True, True, False]
    assert received[3] == {"type": "http.disconnect"}
    assert protocol.answers == [("bytes", 200, [("x", "1")], b"ok")]


async def _echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {"size": len(body), "query": request.url.query, "host": request.client.host}  # type: ignore[union-attr]
    )


def _app(tmp_path: Path) -> Starlette:
    file = tmp_path / "f.bin"
    file.write_bytes(b"x" * 5000)

    async def numbers(_request: Request) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for i in range(3):
                yield str(i).encode()

        return StreamingResponse(parts(), media_type="text/plain")

    async def download(_request: Request) -> FileResponse:
        return FileResponse(file)

    async def broken(_request: Request) -> JSONResponse:
        raise RuntimeError("bug")

    return Starlette(
        routes=[
            Route("/echo", _echo, methods=["POST"]),
            Route("/numbers", numbers),
            Route("/file", download),
            Route("/broken", broken),
        ]
    )


def test_a_framework_answer_goes_out_in_one_call(tmp_path: Path) -> None:
    protocol = Protocol([b"x" * 10, b"y" * 5])
    serve(_app(tmp_path), rsgi_scope("POST", "/echo", "a=1"), protocol)
    [(kind, status, headers, body)] = protocol.answers
    assert (kind, status) == ("bytes", 200)
    assert ("content-type", "application/json") in headers
    assert body == b'{"size":15,"query":"a=1","host":"127.0.0.1"}'


def test_a_streamed_answer_is_streamed(tmp_path: Path) -> None:
    protocol = Protocol()
    serve(_app(tmp_path), rsgi_scope("GET", "/numbers"), protocol)
    assert [a[:2] for a in protocol.answers] == [("stream", 200)]
    assert b"".join(protocol.streamed) == b"012"


def test_a_file_is_sent_by_the_server(tmp_path: Path) -> None:
    protocol = Protocol()
    serve(_app(tmp_path), rsgi_scope("GET", "/file"), protocol)
    [(kind, status, headers, file)] = protocol.answers
    assert (kind, status, file) == ("file", 200, str(tmp_path / "f.bin"))
    assert ("content-length", "5000") in headers


def test_an_application_error_before_the_answer_is_a_500(tmp_path: Path) -> None:
    protocol = Protocol()
    serve(_app(tmp_path), rsgi_scope("GET", "/broken"), protocol)
    assert [a[:2] for a in protocol.answers] == [("bytes", 500)]

    async def silent(scope: Any, receive: Any, send: Any) -> None:
        return None

    protocol = Protocol()
    serve(silent, rsgi_scope(), protocol)
    assert [a[:2] for a in protocol.answers] == [("bytes", 500)]


def test_an_error_after_the_answer_started_sends_nothing_more() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        raise RuntimeError("midway")

    protocol = Protocol()
    serve(app, rsgi_scope(), protocol)
    assert [a[:2] for a in protocol.answers] == [("stream", 200)]
    assert protocol.streamed == [b"a"]


def test_streaming_to_a_client_that_left_raises_oserror() -> None:
    raised: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
        except OSError as exc:
            raised.append(exc)
        await send({"type": "http.response.body", "body": b"b"})  # dropped, no error

    protocol = Protocol(closed=True)
    serve(app, rsgi_scope(), protocol)
    assert len(raised) == 1 and protocol.streamed == []


def test_the_lifespan_runs_at_worker_start_and_stop() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        events.append("startup")
        yield {"db": "ready"}
        events.append("shutdown")

    async def state(request: Request) -> JSONResponse:
        return JSONResponse({"db": request.state.db})

    bridge = RsgiBridge(Starlette(routes=[Route("/", state)], lifespan=lifespan))
    loop = asyncio.new_event_loop()
    try:
        bridge.__rsgi_init__(loop)
        assert events == ["startup"]
        protocol = Protocol()
        loop.run_until_complete(bridge.__rsgi__(rsgi_scope(), protocol))
        assert protocol.answers[0][3] == b'{"db":"ready"}'
        bridge.__rsgi_del__(loop)
        assert events == ["startup", "shutdown"]
    finally:
        loop.close()


def test_a_failed_startup_ends_the_worker() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    bridge = RsgiBridge(Starlette(lifespan=lifespan))
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(SystemExit) as exited:
            bridge.__rsgi_init__(loop)
        assert exited.value.code == 1
    finally:
        loop.close()
