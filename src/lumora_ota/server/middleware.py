"""Cross-cutting ASGI middleware: security headers and device-endpoint rate limiting.

Both are plain ASGI (no per-request Starlette objects) to keep the device hot path cheap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lumora_ota.domain.ratelimit import RateLimit, TokenBuckets
from lumora_ota.server.endpoints import ASSET, device_endpoint_of
from lumora_ota.server.problems import Problem

API_SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]

# Every answer on the asset path (files, ranges, patches, redirects, errors): a document it
# turns into gets a unique opaque origin, runs no script and loads nothing, so a published
# file can never act on the dashboard's origin (issue 15 item 1; ``server/device/assets.py``).
ASSET_PATH_PREFIX = ASSET.prefix
ASSET_CSP = "sandbox; default-src 'none'"
ASSET_SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", ASSET_CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
)


def with_security_headers(
    headers: Iterable[tuple[bytes, bytes]], *, asset: bool = False
) -> list[tuple[bytes, bytes]]:
    """``headers`` plus the security headers among ``API_SECURITY_HEADERS`` (and, for an
    answer on the asset path, ``ASSET_SECURITY_HEADERS``) it lacks."""
    finished = list(headers)
    present = {name.lower() for name, _ in finished}
    finished.extend(h for h in API_SECURITY_HEADERS if h[0] not in present)
    if asset:
        # The asset path's policy replaces any other (no route there may loosen it).
        finished = [h for h in finished if h[0].lower() != b"content-security-policy"]
        finished.append(ASSET_SECURITY_HEADERS[0])
    return finished


class SecurityHeadersMiddleware:
    """Adds nosniff, no-referrer and frame denial to every response that lacks them, and the
    sandboxing policy to every answer on the asset path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        asset = scope["path"].startswith(ASSET_PATH_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_security_headers(message.get("headers", ()), asset=asset)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _client_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name in (b"eas-client-id", b"x-lumora-device-id"):
            client: str = value.decode("latin-1")[:200]
            return client
    return None


class DeviceRateLimiter:
    """Token buckets per device (client id) and per IP, for device endpoints only; the
    management API has keys and audit instead."""

    def __init__(
        self,
        *,
        per_ip: RateLimit | None,
        per_client: RateLimit | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.ip_buckets = TokenBuckets(per_ip) if per_ip else None
        self.client_buckets = TokenBuckets(per_client) if per_client else None

    def take(self, scope: Scope) -> float:
        """Spend a token for this request: 0 when allowed, else the seconds to wait."""
        now = self.clock()
        wait = 0.0
        if self.client_buckets is not None:
            client = _client_id(scope)
            if client is not None:
                wait = self.client_buckets.take(client, now)
        if wait == 0.0 and self.ip_buckets is not None:
            ip = (scope.get("client") or ("unknown", 0))[0]
            wait = self.ip_buckets.take(ip, now)
        return wait


# Set by the device edge on a request it already charged (the seconds to wait, 0 when
# allowed), so the middleware answers from that instead of charging the request twice.
RATE_LIMIT_SCOPE_KEY = "lumora.rate_limit_wait"


def is_device_request(scope: Scope) -> bool:
    """Whether an HTTP request goes to a device endpoint the rate limits cover (the table in
    ``server/endpoints.py``): never a management route, even one under a device path's
    prefix, which keys, not device limits, govern."""
    endpoint = device_endpoint_of(scope)
    return endpoint is not None and endpoint.rate_limited


class DeviceRateLimitMiddleware:
    """429 with ``Retry-After`` when a device (by client id) or an IP exceeds its limit."""

    def __init__(self, app: ASGIApp, *, limiter: DeviceRateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_device_request(scope):
            await self.app(scope, receive, send)
            return
        wait = scope.get(RATE_LIMIT_SCOPE_KEY)
        if wait is None:
            wait = self.limiter.take(scope)
        if wait > 0:
            await too_many_requests(wait).send(send, scope["path"])
            return
        await self.app(scope, receive, send)


def too_many_requests(wait: float) -> Problem:
    """The 429 problem for a request that must wait ``wait`` seconds (``Retry-After``)."""
    retry_after = str(max(1, math.ceil(wait)))
    return Problem(
        429,
        f"rate limit exceeded; retry after {retry_after} s",
        headers={"retry-after": retry_after},
    )
