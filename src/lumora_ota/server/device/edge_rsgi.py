"""The device edge's manifest and check answers over granian's RSGI interface, natively.

Under RSGI (``server/rsgi.py``) every request could go through the ASGI bridge to the edge
(``DeviceEdge``); for the two requests devices make on every launch that would build an ASGI
scope, encode every header to bytes and decode the answer's back, only for the edge to turn
them into a dict again. ``RsgiEdge`` reads the RSGI request as it comes (text headers) and
answers with one ``response_bytes`` call whose header list is built once per answer shape,
through the same ``DeviceEdge`` rules (``manifest_reply``, ``check_reply``), counted the same
way. Assets too (``asset_reply``): bytes kept in memory, and the empty answer carrying
``X-Accel-Redirect`` when nginx sends the file, go out by ``response_bytes``, a file by
``response_file`` (sent by granian). Everything else is left to the bridge: a ``HEAD``, any
request the edge leaves to the application (a range, delta negotiation, ``Origin``, an
object store; handed straight to the framework, with the check body it read), and an asset
request with a query string.

Used only when the edge is the application's front and no device rate limit is set: the
limiter and the trusted-proxy middleware work on the ASGI scope.
"""

from __future__ import annotations

import logging

from lumora_ota.server.device.answer import RawHeaders
from lumora_ota.server.device.edge import MAX_FINISHED_HEADER_SETS, DeviceEdge
from lumora_ota.server.endpoints import ASSET, EXPO_MANIFEST, UPDATES_CHECK, match
from lumora_ota.server.request_guard import MAX_HEADER_BYTES
from lumora_ota.server.rsgi import Handover, RsgiProtocol, RsgiScope

log = logging.getLogger("lumora_ota.server")

UNTOUCHED = Handover()
NO_BODY_STATUSES = (204, 304)


def rsgi_request_headers(items: list[tuple[str, str]]) -> dict[str, str] | None:
    """``edge.request_headers`` for RSGI's text headers (printable ASCII: lengths are
    bytes): first value wins; None with ``Origin`` or past the request guard's size."""
    headers: dict[str, str] = {}
    size = 0
    for name, value in items:
        if name == "origin":
            return None
        size += len(name) + len(value)
        if name not in headers:
            headers[name] = value
    return None if size > MAX_HEADER_BYTES else headers


def _client_host(client: str) -> str:
    return client.rpartition(":")[0].strip("[]")


class RsgiEdge:
    """Answers manifest and check requests natively (module docstring); a
    ``server.rsgi.NativeHandler``."""

    def __init__(self, edge: DeviceEdge) -> None:
        self._edge = edge
        self._headers: dict[RawHeaders, list[tuple[str, str]]] = {}

    async def __call__(self, scope: RsgiScope, protocol: RsgiProtocol) -> Handover | None:
        if scope.query_string:
            return UNTOUCHED
        method = scope.method
        if method != "GET" and method != "POST":
            return UNTOUCHED
        found = match(method, scope.path)
        if found is None:
            return UNTOUCHED
        endpoint, params = found
        edge = self._edge
        if endpoint is ASSET and method == "GET":
            started = edge.now()
            try:
                asset = await edge.asset_reply(
                    params["name"], rsgi_request_headers(scope.headers.items()), files_sent=True
                )
            except Exception as exc:
                reply = edge.problem(exc, method, scope.path)
                if reply is None:
                    return Handover(framework=True)
                self._respond(protocol, *reply)
                edge.observe(method, ASSET.metric, reply[0], started)
                return None
            if asset is None:
                return Handover(framework=True)
            answer = self._finished(asset.headers)
            if asset.length is not None:
                answer = [*answer, ("content-length", str(asset.length))]
            if asset.path is None:
                protocol.response_bytes(asset.status, answer, asset.body)
            else:
                protocol.response_file(asset.status, answer, asset.path)
            edge.observe(method, ASSET.metric, asset.status, started)
            return None
        if endpoint is EXPO_MANIFEST and method == "GET":
            started = edge.now()
            reply = await edge.manifest_reply(
                params["project"],
                rsgi_request_headers(scope.headers.items()),
                _client_host(scope.client),
                scope.path,
            )
            if reply is None:
                return Handover(framework=True)
            self._respond(protocol, *reply)
            edge.observe("GET", EXPO_MANIFEST.metric, reply[0], started)
            return None
        if endpoint is UPDATES_CHECK and method == "POST":
            started = edge.now()
            headers = rsgi_request_headers(scope.headers.items())
            # A body of unknown length is read by the ASGI branch, which stops at the limit.
            if headers is None or "content-length" not in headers:
                return UNTOUCHED
            if not edge.may_read_check(headers):
                return Handover(framework=True)
            try:
                body = await protocol()  # the declared length, within the JSON limit
            except Exception:  # the client went before sending it all: nobody to answer
                log.debug("check body cut off by the client", exc_info=True)
                return None
            reply = await edge.check_reply(body, headers, _client_host(scope.client), scope.path)
            if reply is None:
                return Handover(framework=True, body=body)
            self._respond(protocol, *reply)
            edge.observe("POST", UPDATES_CHECK.metric, reply[0], started)
            return None
        return UNTOUCHED

    def _finished(self, headers: RawHeaders) -> list[tuple[str, str]]:
        """The edge's ``finished_headers`` as RSGI's text pairs, memoized (bounded)."""
        finished = self._headers.get(headers)
        if finished is None:
            if len(self._headers) >= MAX_FINISHED_HEADER_SETS:
                self._headers.clear()
            finished = self._headers[headers] = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in self._edge.finished_headers(headers)
            ]
        return finished

    def _respond(
        self, protocol: RsgiProtocol, status: int, body: bytes, headers: RawHeaders
    ) -> None:
        finished = self._finished(headers)
        if status not in NO_BODY_STATUSES:  # as Starlette: a length unless there is no body
            finished = [*finished, ("content-length", str(len(body)))]
        protocol.response_bytes(status, finished, body)
