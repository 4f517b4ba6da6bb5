"""CORS for the device endpoints only, so web apps can check for and download updates.

The management API stays same-origin: this wraps Starlette's ``CORSMiddleware`` around the
app for device paths alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lumora_ota.server.endpoints import DEVICE_ENDPOINTS, device_endpoint_of

# Headers a web client needs to read from device answers.
EXPOSED_HEADERS = [
    "expo-protocol-version",
    "expo-sfv-version",
    "expo-manifest-filters",
    "expo-server-defined-headers",
    "expo-signature",
    "content-encoding",
    "content-range",
    "accept-ranges",
    "etag",
]
# What the device endpoints under CORS accept (from the table), and preflights.
CORS_METHODS = sorted({"OPTIONS"}.union(*(e.methods for e in DEVICE_ENDPOINTS if e.cors)))


def is_cors_request(scope: Scope) -> bool:
    """Whether an HTTP request goes to a device endpoint device CORS covers (the table in
    ``server/endpoints.py``; a preflight by the method it asks about)."""
    endpoint = device_endpoint_of(scope)
    return endpoint is not None and endpoint.cors


class DeviceCORSMiddleware:
    """Applies CORS (preflights and response headers) to device paths only."""

    def __init__(self, app: ASGIApp, allow_origins: tuple[str, ...] = ("*",)) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=list(allow_origins),
            allow_methods=CORS_METHODS,
            allow_headers=["*"],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_cors_request(scope):
            await self.app(scope, receive, send)
        elif any(name == b"origin" for name, _ in scope["headers"]):
            await self.cors(scope, receive, send)
        else:
            # No Origin: not a CORS request (apps, curl), so no CORS headers but the one
            # Starlette's middleware would add too, without its per-request header objects.
            await self.app(scope, receive, _vary_on_origin(send))


def _vary_on_origin(send: Send) -> Send:
    """``send`` with ``Vary: Origin`` added to the response: caches must keep answers for
    requests with an Origin apart from this one (which has no CORS headers)."""

    async def send_varying(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = vary_on_origin(message.get("headers", ()))
        await send(message)

    return send_varying


def vary_on_origin(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` with ``Origin`` added to ``vary`` (or a ``vary: Origin`` header)."""
    varied = list(headers)
    for i, (name, value) in enumerate(varied):
        if name.lower() == b"vary":
            varied[i] = (name, value + b", Origin")
            return varied
    varied.append((b"vary", b"Origin"))
    return varied
