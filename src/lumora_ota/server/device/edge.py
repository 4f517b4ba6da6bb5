"""The device edge: the commonest device requests answered before the web framework.

Devices make nearly every request a Lumora server sees, and the three they make on every
launch cost far more in framework layers (routing, dependency solving, exception and
middleware wrappers, header objects) than in answering: the answers are memoized bytes. The
edge sits in front of the FastAPI application (``LumoraApp.__call__``) and recognises, by
method and path alone:

=========================  ===============================================================
``EXPO_MANIFEST`` (GET)    ``ExpoResponder.answer``
``UPDATES_CHECK`` (POST)   ``CheckResponder.answer`` (the route's model)
``ASSET`` (GET)            ``AssetFiles.find``: bytes kept in memory, else the file by ASGI
                           ``pathsend`` (behind nginx: ``X-Accel-Redirect``, no bytes)
=========================  ===============================================================

(the endpoints whose ``edge`` method is set in ``server/endpoints.py``, matched by it).

It sends the answer with the headers the middleware would have added (security headers,
``Vary: Origin``) and counts it in the request metrics under the route's template. The same
responders back the FastAPI routes, so there is one implementation of every rule.

Everything else goes to the application unchanged: a browser request (``Origin``: CORS
applies), a query string, a HEAD or Range request, a delta-patch negotiation, an object
store, a request the guards refuse (NUL, oversized headers), a check body the route must
read itself (too large, cut off, not a JSON object). A responder that raises a problem (a
4xx, an outage's 503) is answered here through the server's one problem renderer
(``server/problems.py``: ``problem_for``), as the route's exception handler would; anything
unexpected is logged and then handed to the application untouched (a check's body
replayed), which answers it as it always has. With rate limits on, the edge charges each
device request once and hands a refused one to the application, whose rate-limit middleware
answers 429 from that outcome.

The manifest and check rules are transport-neutral (``manifest_reply``, ``check_reply``: an
answer, or None for the application): under granian's RSGI interface ``edge_rsgi.py`` calls
them directly, without an ASGI scope; the asset branch is reached through the RSGI bridge.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NamedTuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lumora_ota.server.context import AppContext
from lumora_ota.server.device.answer import RawHeaders
from lumora_ota.server.device.assets import (
    ASSET_NAME_RE,
    AssetFiles,
    etag_matches,
    record_asset_download,
)
from lumora_ota.server.device.check import CheckRequest, CheckResponder
from lumora_ota.server.device.cors import vary_on_origin
from lumora_ota.server.device.expo import ExpoResponder
from lumora_ota.server.device.patches import full_asset_vary, patch_index
from lumora_ota.server.endpoints import (
    ASSET,
    EXPO_MANIFEST,
    UPDATES_CHECK,
    DeviceEndpoint,
    match,
)
from lumora_ota.server.management.guards import parse_json_body
from lumora_ota.server.metrics import RequestMetrics
from lumora_ota.server.middleware import (
    RATE_LIMIT_SCOPE_KEY,
    DeviceRateLimiter,
    is_device_request,
    with_security_headers,
)
from lumora_ota.server.problems import problem_for
from lumora_ota.server.request_guard import MAX_HEADER_BYTES, header_bytes
from lumora_ota.store.blobs import FileBlobStore
from lumora_ota.store.outage import database_name

log = logging.getLogger("lumora_ota.server")

PATHSEND = "http.response.pathsend"
# Distinct header sets are few (per protocol, media type, encoding); this only bounds memory.
MAX_FINISHED_HEADER_SETS = 4096


# An answer: status, body, and headers before ``finish_headers``.
Reply = tuple[int, bytes, RawHeaders]


class AssetReply(NamedTuple):
    """An asset answer: its status, headers (no ``content-length``), the body in memory
    (empty for a 304 and for nginx's ``X-Accel-Redirect`` hand-over) or the ``path`` of the
    file to send, and the ``content-length`` (None for a 304)."""

    status: int
    headers: RawHeaders
    body: bytes
    path: str | None
    length: int | None


def request_headers(scope: Scope) -> dict[str, str] | None:
    """The request's headers by (lowercase) name, first value winning as in Starlette; None
    for a request the edge leaves to the application (``Origin`` present, or headers the
    request guard would refuse)."""
    if header_bytes(scope) > MAX_HEADER_BYTES:
        return None
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name == b"origin":
            return None
        key = name.decode("latin-1")
        if key not in headers:
            headers[key] = value.decode("latin-1")
    return headers


def is_json_content_type(value: str | None) -> bool:
    """Whether FastAPI would parse a body with this content type as JSON (it requires one:
    strict content types)."""
    if not value:
        return False
    media = value.split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def finish_headers(headers: RawHeaders) -> list[tuple[bytes, bytes]]:
    """An answer's headers as the middleware stack would send them for a request without
    ``Origin``: ``Origin`` added to ``vary`` (device CORS), then the security headers the
    answer lacks."""
    return with_security_headers(vary_on_origin(headers))


class DeviceEdge:
    """Answers manifest, check and asset requests ahead of the framework (module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        ctx: AppContext,
        expo: ExpoResponder,
        check: CheckResponder,
        files: AssetFiles,
        metrics: RequestMetrics | None,
        limiter: DeviceRateLimiter | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.app = app
        self._limiter = limiter
        self._ctx = ctx
        self._expo = expo
        self._check = check
        # An object store's assets are redirects the route makes: only local files here.
        self._files = files if isinstance(ctx.blobs, FileBlobStore) else None
        self._metrics = metrics
        self._clock = clock
        self._max_json_bytes = ctx.settings.max_json_bytes
        self._database = database_name(ctx.engine)
        self._finished: dict[RawHeaders, list[tuple[bytes, bytes]]] = {}
        self.answered = 0  # requests the edge answered itself (/metrics and tests read it)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._limiter is not None and is_device_request(scope):
            # Charged once, here: a refused request, and any the edge hands over, carry the
            # outcome to the rate-limit middleware, which answers from it (429 + Retry-After).
            wait = scope[RATE_LIMIT_SCOPE_KEY] = self._limiter.take(scope)
            if wait > 0:
                await self.app(scope, receive, send)
                return
        if scope.get("query_string") or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        found = match(method, scope["path"])
        if found is not None and found[0].edge == method:
            endpoint, params = found
            if endpoint is ASSET:
                await self._asset(params["name"], scope, receive, send)
                return
            if endpoint is EXPO_MANIFEST:
                await self._manifest(params["project"], scope, receive, send)
                return
            if endpoint is UPDATES_CHECK:
                await self._check_request(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _manifest(self, project: str, scope: Scope, receive: Receive, send: Send) -> None:
        started = self._clock()
        reply = await self.manifest_reply(
            project, request_headers(scope), _client_host(scope), scope["path"]
        )
        if reply is None:
            await self.app(scope, receive, send)
            return
        await self._send(send, *reply)
        self._observe("GET", EXPO_MANIFEST.metric, reply[0], started)

    async def manifest_reply(
        self, project: str, headers: dict[str, str] | None, client_host: str | None, path: str
    ) -> Reply | None:
        """The manifest answer (status, body, headers before ``finish_headers``), a problem
        rendered here included; None when the application answers (``headers`` None: the
        edge leaves the request; an unexpected error: logged here)."""
        if headers is None or "\x00" in project:
            return None
        try:
            answer = await self._expo.answer(project, headers, {}, client_host=client_host)
        except Exception as exc:
            return self._problem(exc, "GET", path)
        return answer.status, answer.body, answer.headers

    def may_read_check(self, headers: dict[str, str] | None) -> bool:
        """Whether the edge reads a check request's body: JSON declared, a length (when
        given) within the JSON limit."""
        if headers is None or not is_json_content_type(headers.get("content-type")):
            return False
        declared = headers.get("content-length")
        return declared is None or (declared.isdigit() and int(declared) <= self._max_json_bytes)

    async def check_reply(
        self, body: bytes, headers: dict[str, str], client_host: str | None, path: str
    ) -> Reply | None:
        """The check answer for a whole body within the JSON limit, as ``manifest_reply``;
        None also for a body the route words its own errors for (empty, not an object)."""
        if not body.strip():
            return None  # the route's own 422
        try:
            document = parse_json_body(body)
            if not isinstance(document, dict):  # the route words this error its own way
                return None
            request = CheckRequest.model_validate(document)
            answer = await self._check.answer(
                request, signed="expo-expect-signature" in headers, client_host=client_host
            )
        except Exception as exc:
            return self._problem(exc, "POST", path)
        return answer.status, answer.body, answer.headers

    async def _check_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = self._clock()
        headers = request_headers(scope)
        if headers is None or not self.may_read_check(headers):
            await self.app(scope, receive, send)
            return
        body, more = await self._read_body(receive)
        replayed = _replay(body, more, receive)
        reply = None
        if not more and len(body) <= self._max_json_bytes:
            # Over the limit or cut off: the route's own answers (413, 400).
            reply = await self.check_reply(body, headers, _client_host(scope), scope["path"])
        if reply is None:
            await self.app(scope, replayed, send)
            return
        await self._send(send, *reply)
        self._observe("POST", UPDATES_CHECK.metric, reply[0], started)

    async def _read_body(self, receive: Receive) -> tuple[bytes, bool]:
        """The body, or what was read of it once past the JSON limit (then ``True``)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # disconnected: let the app see it
                return b"".join(chunks), True
            chunk: bytes = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False
            if size > self._max_json_bytes:
                return b"".join(chunks), True

    async def asset_reply(
        self, name: str, headers: dict[str, str] | None, *, files_sent: bool
    ) -> AssetReply | None:
        """The answer to ``GET /assets/{name}`` with request ``headers`` (lowercase names;
        None: left to the application), or None where the route answers (a range, delta
        negotiation, an object store, an unknown or unpublished asset, a file when the
        transport cannot send files, ``files_sent`` False). A 200 is counted as a download.
        Raises what the patch index or the blob store raise (``_problem`` renders it)."""
        files = self._files
        match = ASSET_NAME_RE.fullmatch(name)
        if (
            files is None
            or headers is None
            or match is None
            or "range" in headers
            or "expo-requested-update-id" in headers  # delta negotiation: the route's
        ):
            return None
        sha256 = match["sha256"]
        # As the route: the patch index is loaded for every asset request, so the
        # ``vary`` of a URL is the same whichever request came first.
        snapshot = await patch_index(self._ctx).snapshot()
        if sha256 not in snapshot.published:
            return None  # the route looks it up, or answers 404 (never published)
        found = files.find(sha256, match["ext"] or "", headers.get("accept-encoding"))
        if found is None:
            return None  # the route answers 404
        asset, data = found
        if data is None and not files_sent:
            return None  # the route streams the file (FileResponse)
        vary = full_asset_vary(self._ctx, sha256).encode("latin-1")
        answer_headers = (*asset.headers, (b"vary", vary))
        if_none_match = headers.get("if-none-match")
        if if_none_match is not None and etag_matches(if_none_match, asset.etag):
            unchanged = tuple(h for h in answer_headers if h[0] != b"content-type")
            return AssetReply(304, unchanged, b"", None, None)
        record_asset_download(self._ctx, "GET", asset)
        if data is not None:  # (with X-Accel-Redirect: no bytes, nginx sends the file)
            return AssetReply(200, (*answer_headers, *asset.accel), data, None, len(data))
        return AssetReply(200, answer_headers, b"", str(asset.path), asset.stat.st_size)

    async def _asset(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        started = self._clock()
        try:
            reply = await self.asset_reply(
                name, request_headers(scope), files_sent=PATHSEND in scope.get("extensions", {})
            )
        except Exception as exc:
            await self._failed(exc, ASSET, started, scope, receive, send)
            return
        if reply is None:
            await self.app(scope, receive, send)
            return
        await send(self._start_message(reply.status, reply.headers, reply.length))
        if reply.path is None:
            await send({"type": "http.response.body", "body": reply.body})
        else:
            await send({"type": PATHSEND, "path": reply.path})
        self._observe("GET", ASSET.metric, reply.status, started)

    async def _failed(
        self,
        exc: Exception,
        endpoint: DeviceEndpoint,
        started: float,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Answer a request whose responder raised (``_problem``), or hand it over."""
        reply = self._problem(exc, scope["method"], scope["path"])
        if reply is None:
            await self.app(scope, receive, send)
            return
        await self._send(send, *reply)
        self._observe(scope["method"], endpoint.metric, reply[0], started)

    def problem(self, exc: Exception, method: str, path: str) -> Reply | None:
        """``_problem``: a responder's error as the route would answer it, or None."""
        return self._problem(exc, method, path)

    def _problem(self, exc: Exception, method: str, path: str) -> Reply | None:
        """A responder's error as a problem document rendered by the one renderer
        (``server/problems.py``), as the route's exception handler would; None for anything
        unexpected, logged here, which the application then answers."""
        problem = problem_for(exc, self._database)
        if problem is None:
            log.exception(
                "device edge: unexpected error on %s %s; handing the request over", method, path
            )
            return None
        body, headers = problem.render(path)
        return problem.status, body, tuple(headers)

    def finished_headers(self, headers: RawHeaders) -> list[tuple[bytes, bytes]]:
        """``finish_headers(headers)``, memoized (few distinct sets; bounded)."""
        finished = self._finished.get(headers)
        if finished is None:
            if len(self._finished) >= MAX_FINISHED_HEADER_SETS:
                self._finished.clear()
            finished = self._finished[headers] = finish_headers(headers)
        return finished

    def _start_message(self, status: int, headers: RawHeaders, length: int | None) -> Message:
        finished = self.finished_headers(headers)
        if length is not None:
            finished = [*finished, (b"content-length", str(length).encode())]
        return {"type": "http.response.start", "status": status, "headers": finished}

    async def _send(self, send: Send, status: int, body: bytes, headers: RawHeaders) -> None:
        # As Starlette: no content-length on answers that cannot have a body.
        length = None if status in (204, 304) else len(body)
        await send(self._start_message(status, headers, length))
        await send({"type": "http.response.body", "body": body})

    @property
    def rate_limited(self) -> bool:
        """Whether device rate limits are charged here."""
        return self._limiter is not None

    def now(self) -> float:
        """The clock ``observe`` measures from (seconds)."""
        return self._clock()

    def observe(self, method: str, route: str, status: int, started: float) -> None:
        """Count an answer the edge gave (``started``: the clock when the request came)."""
        self._observe(method, route, status, started)

    def _observe(self, method: str, route: str, status: int, started: float) -> None:
        self.answered += 1
        if self._metrics is not None:
            self._metrics.observe(method, route, status, self._clock() - started)


def _client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """``receive`` for the application after the edge read (part of) the body."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": more}]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay
