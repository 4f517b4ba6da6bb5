"""Rate limiting: the pure token buckets, and 429 + Retry-After from a real server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import ServerProcess
from lumora_ota.domain.ratelimit import RateLimit, TokenBuckets


def test_parse_specs() -> None:
    assert RateLimit.parse("") is None
    assert RateLimit.parse("off") is None
    assert RateLimit.parse("10") == RateLimit(rate=10, burst=10)
    assert RateLimit.parse("2/5") == RateLimit(rate=2, burst=5)
    with pytest.raises(ValueError):
        RateLimit.parse("-1")
    with pytest.raises(ValueError):
        RateLimit.parse("abc")


def test_burst_then_refill() -> None:
    buckets = TokenBuckets(RateLimit(rate=2, burst=3))
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0, 0, 0]
    wait = buckets.take("a", 0.0)
    assert wait == pytest.approx(0.5)
    # another key has its own bucket
    assert buckets.take("b", 0.0) == 0
    # half a second later one token is back
    assert buckets.take("a", 0.5) == 0
    assert buckets.take("a", 0.5) > 0


@given(
    rate=st.floats(min_value=0.5, max_value=100),
    burst=st.integers(min_value=1, max_value=50),
    n=st.integers(min_value=1, max_value=200),
)
def test_never_allows_more_than_burst_plus_refill(rate: float, burst: int, n: int) -> None:
    buckets = TokenBuckets(RateLimit(rate=rate, burst=burst))
    span = 1.0
    allowed = sum(1 for i in range(n) if buckets.take("k", span * i / n) == 0)
    assert allowed <= burst + rate * span + 1e-9


def test_memory_is_bounded() -> None:
    buckets = TokenBuckets(RateLimit(rate=1, burst=1), max_keys=10)
    for i in range(1000):
        buckets.take(f"k{i}", 0.0)
    assert len(buckets._buckets) == 10


def test_server_answers_429_with_retry_after(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: ServerProcess = server_factory("sqlite", extra_env={"LUMORA_RATE_LIMIT_PER_CLIENT": "1/3"})
    with srv.anon() as http:
        headers = {"eas-client-id": "device-1", "expo-platform": "ios"}
        statuses = [http.get("/api/v1/expo/nope/manifest", headers=headers) for _ in range(5)]
        codes = [r.status_code for r in statuses]
        assert 429 not in codes[:3]
        limited = [r for r in statuses if r.status_code == 429]
        assert limited, codes
        assert int(limited[0].headers["retry-after"]) >= 1
        assert limited[0].headers["content-type"] == "application/problem+json"
        # another device is not limited by device-1's spending
        other = http.get("/api/v1/expo/nope/manifest", headers={"eas-client-id": "device-2"})
        assert other.status_code != 429
        # the management API and health are never rate limited
        assert all(http.get("/health").status_code == 200 for _ in range(5))


def test_api_responses_carry_security_headers(server: ServerProcess) -> None:
    resp = server.anon().get("/health")
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"
