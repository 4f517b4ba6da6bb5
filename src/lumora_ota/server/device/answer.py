"""``DeviceAnswer``: a device endpoint's answer as plain bytes, before any framework sees it.

The device endpoints compute their answers once (``ExpoResponder``, ``CheckResponder``) and
hand them to two front ends: the FastAPI routes (``to_response``), which document the API and
take every unusual request, and the device edge (``server/device/edge.py``), which sends the
common ones straight to the ASGI server. Headers are kept as the ASGI ``(name, value)`` byte
pairs so the edge never converts them per request.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from starlette.responses import Response

RawHeaders = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class DeviceAnswer:
    """Status, body and headers (content-type included, content-length left to the sender)."""

    status: int
    body: bytes
    headers: RawHeaders

    def to_response(self) -> Response:
        """The same answer as a Starlette response (the FastAPI routes' path)."""
        response = Response(self.body, status_code=self.status)
        # Starlette computed content-length (and nothing else: no media type given).
        response.raw_headers = [*self.headers, *response.raw_headers]
        return response


@functools.lru_cache(maxsize=1024)
def raw_headers(*pairs: tuple[str, str]) -> RawHeaders:
    """``(name, value)`` string pairs as ASGI header bytes, lowercased names; memoized, since
    device answers repeat the same few header sets."""
    return tuple((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in pairs)
