"""The device endpoints: the one table of the URL space anonymous devices use.

Every device path is written here and only here (issue 18 item 1). From the table come the
FastAPI routes (``path``, ``methods``), the device edge's matcher (``match``, ``edge``), the
rate-limit and CORS policies (``rate_limited``, ``cors``: ``device_endpoint_of``), the
sandboxing of the asset path (``ASSET.prefix``) and the request-metric label (``metric``,
the template, as the route reports it). Like Starlette's ``routing.py``: paths are templates
compiled by ``starlette.routing.compile_path``, and a request matches an endpoint by method
and path, never by prefix, so a management route under a device path's prefix
(``POST /api/v1/assets/missing``, ``PUT /api/v1/assets/{sha256}``) is never mistaken for
one.

=================  ===========  ===================================  ==================
endpoint           methods      path template                        responder
=================  ===========  ===================================  ==================
``EXPO_MANIFEST``  GET          ``/api/v1/expo/{project}/manifest``  ``ExpoResponder``
``UPDATES_CHECK``  POST         ``/api/v1/updates/check``            ``CheckResponder``
``ASSET``          GET, HEAD    ``/api/v1/assets/{name}``            ``AssetFiles``
``EVENTS``         POST         ``/api/v1/events``                   ``StatsRecorder``
=================  ===========  ===================================  ==================
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from starlette.routing import compile_path
from starlette.types import Scope

Responder = Literal["expo", "check", "files", "events"]


@dataclass(frozen=True)
class DeviceEndpoint:
    """One device endpoint.

    ``methods`` are the HTTP methods its route accepts; ``edge`` the one method the device
    edge answers ahead of the framework (None: never); ``rate_limited`` and ``cors`` whether
    the per-device/per-IP limits and device CORS apply; ``metric`` the request-metric label.
    """

    name: str
    methods: frozenset[str]
    path: str
    responder: Responder
    edge: str | None = None
    rate_limited: bool = True
    cors: bool = True
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex, _format, _convertors = compile_path(self.path)
        object.__setattr__(self, "regex", regex)

    @property
    def metric(self) -> str:
        """The request-metric label: the path template (what the route reports)."""
        return self.path

    @property
    def prefix(self) -> str:
        """The literal start of the template, up to its first parameter."""
        return self.path.split("{", 1)[0]

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters when ``path`` is this endpoint's, else None."""
        found = self.regex.match(path)
        return None if found is None else found.groupdict()


EXPO_MANIFEST = DeviceEndpoint(
    "expo_manifest",
    frozenset({"GET"}),
    "/api/v1/expo/{project}/manifest",
    "expo",
    edge="GET",
)
UPDATES_CHECK = DeviceEndpoint(
    "updates_check", frozenset({"POST"}), "/api/v1/updates/check", "check", edge="POST"
)
ASSET = DeviceEndpoint(
    "asset", frozenset({"GET", "HEAD"}), "/api/v1/assets/{name}", "files", edge="GET"
)
EVENTS = DeviceEndpoint("events", frozenset({"POST"}), "/api/v1/events", "events")

# Most requests first: assets, then manifests and checks.
DEVICE_ENDPOINTS: tuple[DeviceEndpoint, ...] = (ASSET, EXPO_MANIFEST, UPDATES_CHECK, EVENTS)
_COMMON_PREFIX = "/api/v1/"


def match(method: str, path: str) -> tuple[DeviceEndpoint, dict[str, str]] | None:
    """The device endpoint serving ``method path`` and its path parameters, or None."""
    if not path.startswith(_COMMON_PREFIX):
        return None
    for endpoint in DEVICE_ENDPOINTS:
        if method in endpoint.methods:
            params = endpoint.match(path)
            if params is not None:
                return endpoint, params
    return None


def device_endpoint_of(scope: Scope) -> DeviceEndpoint | None:
    """The device endpoint an HTTP request is for, or None (never a management route).

    A CORS preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is for the endpoint
    serving the method it asks about; any other ``OPTIONS`` for the endpoint at its path.
    """
    if scope["type"] != "http":
        return None
    method: str = scope["method"]
    path: str = scope["path"]
    if method != "OPTIONS":
        found = match(method, path)
        return None if found is None else found[0]
    for name, value in scope["headers"]:
        if name == b"access-control-request-method":
            found = match(value.decode("latin-1").upper(), path)
            return None if found is None else found[0]
    if not path.startswith(_COMMON_PREFIX):
        return None
    for endpoint in DEVICE_ENDPOINTS:
        if endpoint.match(path) is not None:
            return endpoint
    return None
