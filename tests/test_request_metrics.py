"""Request metrics kept as plain numbers expose what prometheus-client's own counter and
histogram would for the same requests (``server/metrics.py``: ``RequestMetrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from lumora_ota.server.metrics import LATENCY_BUCKETS, RequestMetrics

OBSERVED = [
    ("GET", "/api/v1/expo/{project}/manifest", 200, 0.0004),
    ("GET", "/api/v1/expo/{project}/manifest", 200, 0.001),  # on a bound: counted in it
    ("GET", "/api/v1/expo/{project}/manifest", 404, 0.003),
    ("POST", "/api/v1/updates/check", 200, 2.0),
    ("POST", "/api/v1/updates/check", 200, 30.0),  # past the last bound: +Inf only
]


def _samples(text: str) -> list[str]:
    return sorted(
        line
        for line in text.splitlines()
        if line and not line.startswith("#") and "_created" not in line
    )


def test_the_exposition_matches_prometheus_client() -> None:
    ours = CollectorRegistry()
    metrics = RequestMetrics(ours)
    reference = CollectorRegistry()
    requests = Counter(
        "lumora_http_requests", "x", ["method", "route", "status"], registry=reference
    )
    latency = Histogram(
        "lumora_http_request_duration_seconds",
        "x",
        ["method", "route"],
        buckets=LATENCY_BUCKETS,
        registry=reference,
    )
    for method, route, status, seconds in OBSERVED:
        metrics.observe(method, route, status, seconds)
        requests.labels(method, route, str(status)).inc()
        latency.labels(method, route).observe(seconds)
    assert _samples(generate_latest(ours).decode()) == _samples(generate_latest(reference).decode())
