"""Token buckets for rate limiting, with time passed in so the logic stays pure."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    """``rate`` requests per second on average, bursts of up to ``burst``."""

    rate: float
    burst: float

    @classmethod
    def parse(cls, spec: str) -> RateLimit | None:
        """Parse ``"RATE"`` or ``"RATE/BURST"`` (requests per second); ``""``/``"0"`` = off."""
        spec = spec.strip()
        if not spec or spec in ("0", "off"):
            return None
        rate_s, _, burst_s = spec.partition("/")
        rate = float(rate_s)
        burst = float(burst_s) if burst_s else max(1.0, rate)
        if rate <= 0 or burst < 1 or not math.isfinite(rate) or not math.isfinite(burst):
            raise ValueError(f"invalid rate limit {spec!r}: want RATE[/BURST] with RATE > 0")
        return cls(rate=rate, burst=burst)


class TokenBuckets:
    """One token bucket per key, the least recently used forgotten past ``max_keys``.

    Forgetting a bucket only ever gives a client a fresh (full) bucket, so memory stays
    bounded under hostile key churn without ever limiting an innocent client wrongly.
    """

    def __init__(self, limit: RateLimit, *, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` has a token at ``now`` (0: it has one), spending nothing."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = min(self.limit.burst, bucket[0] + (now - bucket[1]) * self.limit.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.limit.rate

    def take(self, key: str, now: float) -> float:
        """Spend one token for ``key`` at time ``now``.

        Returns 0 when allowed, else the seconds until a token is available.
        """
        tokens, last = self._buckets.pop(key, (self.limit.burst, now))
        tokens = min(self.limit.burst, tokens + (now - last) * self.limit.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1 - tokens) / self.limit.rate
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait
