"""Prometheus pieces in isolation: delivery-cache figures and route templates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lumora_ota.server.metrics import delivery_metrics, route_template


@dataclass
class FakeDelivery:
    hits: int = 0
    misses: int = 0
    invalidations: int = 0

    def metrics(self) -> dict[str, Any]:
        return {"entries": 7, "bad name!": 1, "label": "not a number"}


def samples(delivery: Any) -> dict[str, float]:
    return {s.name: s.value for m in delivery_metrics(delivery) for s in m.samples}


def test_delivery_cache_figures() -> None:
    got = samples(FakeDelivery(hits=3, misses=1, invalidations=2))
    assert got["lumora_delivery_cache_hits_total"] == 3
    assert got["lumora_delivery_cache_misses_total"] == 1
    assert got["lumora_delivery_cache_hit_ratio"] == 0.75
    assert got["lumora_delivery_cache_invalidations_total"] == 2
    assert got["lumora_delivery_entries"] == 7
    assert not any("bad" in name or "label" in name for name in got)
    assert samples(FakeDelivery())["lumora_delivery_cache_hit_ratio"] == 0.0
    assert samples(None) == {}


def test_route_template_bounds_label_cardinality() -> None:
    class Route:
        path_format = "/api/v1/updates/{update_id}"

    assert route_template({"route": Route()}) == "/api/v1/updates/{update_id}"
    assert route_template({}) == "unmatched"
