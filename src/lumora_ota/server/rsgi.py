"""Serving the ASGI application through granian's native RSGI interface.

granian runs an ASGI application through a Rust bridge of its own: every request builds a
scope of Python objects in Rust and every ``send`` is a future crossing into Rust and back.
Its RSGI interface hands the application the request as one object and takes the answer in
one call (``protocol.response_bytes``), which costs about a third less per request here
(``bench/floor.py``: ``raw_app`` against ``rsgi_app``). ``RsgiBridge`` is the RSGI entry of
``LumoraApp`` (``__rsgi__``, ``__rsgi_init__``, ``__rsgi_del__``): it runs the unchanged
ASGI application, edge and framework, for every request, with an ASGI ``receive``/``send``
pair written in Python over the RSGI protocol:

* the request body is streamed from the protocol (``async for``) as ``http.request``
  messages; after it, ``receive`` waits for the client to go (``http.disconnect``);
* an answer whose body comes in one message (every edge answer, every JSON answer) goes out
  in one ``response_bytes`` call; a streamed body goes through ``response_stream``; an
  ``http.response.pathsend`` (a file) through ``response_file``, sent by granian itself;
* the ASGI lifespan (database migration, background workers, their shutdown) runs in the
  worker's event loop before it serves (``__rsgi_init__``) and after it stopped serving
  (``__rsgi_del__``), through granian's own lifespan driver.

uvicorn keeps calling the ASGI application directly (``LumoraApp.__call__``).

What RSGI does not carry, and so differs from granian's ASGI scope: the path comes
percent-decoded only (``raw_path`` is rebuilt by quoting it, so an encoded ``/`` in a segment
reads as a ``/``; no route here depends on one), and granian drops a header whose value is
not printable ASCII (a tab is kept) rather than passing its bytes.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Scope

log = logging.getLogger("lumora_ota.server")

PATHSEND = "http.response.pathsend"
ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
RAW_PATH_SAFE = "/:@!$&'()*+,;=-._~"  # RFC 3986 pchar: kept as sent
EXTENSIONS: dict[str, dict[str, Any]] = {PATHSEND: {}}
INTERNAL_ERROR = (500, [("content-type", "text/plain; charset=utf-8")], b"Internal Server Error")


class RsgiHeaders(Protocol):
    """The request headers granian hands over (``granian.rsgi.Headers``)."""

    def items(self) -> list[tuple[str, str]]: ...


class RsgiScope(Protocol):
    """What an RSGI request carries (``granian.rsgi.Scope``); text values."""

    proto: str
    http_version: str
    server: str
    client: str
    scheme: str
    method: str
    path: str
    query_string: str

    @property
    def headers(self) -> RsgiHeaders: ...


class RsgiStream(Protocol):
    """A streamed answer's transport (``response_stream``)."""

    async def send_bytes(self, data: bytes) -> None: ...


class RsgiProtocol(Protocol):
    """How an RSGI application reads the request body and sends its answer."""

    async def __call__(self) -> bytes: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def client_disconnect(self) -> None: ...

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...

    def response_file(self, status: int, headers: list[tuple[str, str]], file: str) -> None: ...

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> RsgiStream: ...


@dataclass(frozen=True)
class Handover:
    """What a native handler leaves to the ASGI application: the whole request (the default),
    or, with ``framework``, the application behind its front (the edge already declined),
    given the request ``body`` when the handler has read it."""

    framework: bool = False
    body: bytes | None = None


# Answers a request natively (None) or says what the ASGI application gets (``Handover``).
NativeHandler = Callable[[RsgiScope, RsgiProtocol], Awaitable[Handover | None]]


def _address(value: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:port"`` for IPv6) as ASGI's ``(host, port)``."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def asgi_scope(scope: RsgiScope, state: dict[str, Any]) -> Scope:
    """The ASGI ``http`` scope of an RSGI request, as granian's ASGI interface builds it
    (lowercase header names as latin-1 bytes; ``state`` copied from the lifespan's)."""
    path = scope.path
    return {
        "type": "http",
        "asgi": ASGI_VERSION,
        "http_version": scope.http_version,
        "server": _address(scope.server),
        "client": _address(scope.client),
        "scheme": scope.scheme,
        "method": scope.method,
        "root_path": "",
        "path": path,
        "raw_path": quote(path, safe=RAW_PATH_SAFE).encode("ascii"),
        "query_string": scope.query_string.encode("latin-1"),
        "headers": [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in scope.headers.items()
        ],
        "extensions": EXTENSIONS,
        "state": state.copy(),
    }


class _Exchange:
    """The ASGI ``receive`` and ``send`` of one request over its RSGI protocol."""

    __slots__ = ("_body", "_headers", "_protocol", "_read", "_status", "_stream", "done")

    def __init__(self, protocol: RsgiProtocol, read: bytes | None = None) -> None:
        self._protocol = protocol
        self._body: AsyncIterator[bytes] | None = None
        self._read = read  # a body already read whole (a native handler's), replayed once
        self._status = 0
        self._headers: list[tuple[str, str]] = []
        self._stream: RsgiStream | None = None
        self.done = False  # the answer went out (or the client is gone)

    @property
    def started(self) -> bool:
        """Whether the application has started its answer."""
        return self._status != 0

    async def receive(self) -> Message:
        if self._read is not None:
            body, self._read, self._body = self._read, None, _FINISHED
            return {"type": "http.request", "body": body, "more_body": False}
        if self._body is None:
            self._body = aiter(self._protocol)
        if self._body is not _FINISHED:
            try:
                chunk = await anext(self._body)
            except StopAsyncIteration:
                self._body = _FINISHED
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": chunk, "more_body": True}
        await self._protocol.client_disconnect()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("the answer was already started")
            self._status = message["status"]
            self._headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", ())
            ]
            return
        if not self.started:
            raise RuntimeError(f"{kind} before http.response.start")
        if self.done:
            return  # as over ASGI: what follows a finished answer is dropped
        if kind == "http.response.body":
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if self._stream is None and not more:
                self.done = True
                self._protocol.response_bytes(self._status, self._headers, body)
                return
            if self._stream is None:
                self._stream = self._protocol.response_stream(self._status, self._headers)
            if body:
                try:
                    await self._stream.send_bytes(body)
                except Exception as exc:  # granian's ProtocolClosed: the client went away
                    self.done = True
                    raise OSError("the client disconnected") from exc
            if not more:
                self.done = True
            return
        if kind == PATHSEND:
            self.done = True
            self._protocol.response_file(self._status, self._headers, str(message["path"]))
            return
        raise RuntimeError(f"unexpected ASGI message {kind!r}")

    def fail(self) -> None:
        """Answer 500 when the application raised before starting its answer."""
        if not self.started:
            self._status = INTERNAL_ERROR[0]
            self.done = True
            self._protocol.response_bytes(*INTERNAL_ERROR)


_FINISHED: Any = object()  # the request body was read to its end


class RsgiBridge:
    """Serves an ASGI application (with its lifespan) through granian's RSGI interface."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        native: NativeHandler | None = None,
        framework: ASGIApp | None = None,
    ) -> None:
        """``app`` gets every request ``native`` (when given) hands over; ``framework``
        those it hands over with ``Handover.framework`` (default: ``app``)."""
        self.app = app
        self._native = native
        self._framework = framework or app
        self._state: dict[str, Any] = {}
        self._lifespan: Any = None

    async def __rsgi__(self, scope: RsgiScope, protocol: RsgiProtocol) -> None:
        if scope.proto != "http":  # no websockets here (granian runs with them off)
            return
        app, read = self.app, None
        if self._native is not None:
            try:
                handover = await self._native(scope, protocol)
            except Exception:
                log.exception("unhandled error serving %s %s", scope.method, scope.path)
                _Exchange(protocol).fail()
                return
            if handover is None:
                return  # answered
            if handover.framework:
                app = self._framework
            read = handover.body
        exchange = _Exchange(protocol, read)
        try:
            await app(asgi_scope(scope, self._state), exchange.receive, exchange.send)
        except Exception:
            log.exception("unhandled error serving %s %s", scope.method, scope.path)
            exchange.fail()
            return
        if not exchange.started:
            log.error("no answer for %s %s", scope.method, scope.path)
            exchange.fail()

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the ASGI lifespan's startup (granian calls this in each worker before it
        serves); a failed startup ends the worker with status 1, as granian's ASGI does."""
        from granian.asgi import LifespanProtocol

        self._lifespan = LifespanProtocol(self.app)  # type: ignore[no-untyped-call]
        loop.run_until_complete(self._lifespan.startup())
        if self._lifespan.interrupt:
            log.error("lifespan startup failed", exc_info=self._lifespan.exc)
            sys.exit(1)
        self._state = self._lifespan.state

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the lifespan's shutdown once the worker has stopped serving."""
        if self._lifespan is not None:
            loop.run_until_complete(self._lifespan.shutdown())
