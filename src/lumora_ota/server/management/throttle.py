"""Throttling of failed API-key attempts per client address.

Keys are long random secrets, so guessing is hopeless; the throttle keeps a guesser (or a
misconfigured CI job) from costing a key lookup per request at full speed and makes the
attempts visible: each wrong key from an address spends a token of that address's bucket
(``LUMORA_AUTH_FAILURE_LIMIT``, ``RATE[/BURST]``, default ``1/20``), and while the bucket is
empty *every* key attempt from the address, right or wrong, gets 429 with ``Retry-After``
(answering a right key would tell a guesser it guessed right). Buckets are per server
process, and the address is the client's (``LUMORA_TRUSTED_PROXIES`` applied).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from fastapi import Request

from lumora_ota.domain.ratelimit import RateLimit, TokenBuckets
from lumora_ota.server.context import app_context
from lumora_ota.server.problems import ProblemError

log = logging.getLogger("lumora_ota.auth")


class FailedAuthThrottle:
    """Per-address buckets of failed key attempts (module docstring)."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets = TokenBuckets(limit)
        self._clock = clock

    def check(self, source: str) -> None:
        """Raise 429 (``Retry-After``) while ``source`` has no failed attempt left."""
        wait = self._buckets.wait(source, self._clock())
        if wait > 0:
            retry_after = str(max(1, math.ceil(wait)))
            raise ProblemError(
                429,
                f"too many failed API-key attempts from this address; retry after {retry_after} s",
                headers={"retry-after": retry_after},
            )

    def failed(self, source: str) -> None:
        """Count a wrong key from ``source``."""
        if self._buckets.take(source, self._clock()) > 0:
            log.warning("API-key attempts from %s throttled after repeated failures", source)


def source_of(request: Request) -> str:
    """The client address a request came from (after trusted-proxy headers)."""
    return request.client.host if request.client is not None else "unknown"


def throttle_of(request: Request) -> FailedAuthThrottle | None:
    """The app's throttle, None when it is off."""
    return app_context(request).auth_throttle
