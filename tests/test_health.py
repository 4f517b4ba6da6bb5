"""GET /health against real server processes."""

from __future__ import annotations

from harness import ServerProcess


def test_health_reports_each_dependency(server: ServerProcess) -> None:
    resp = server.client().get("/health")  # details need a key
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok"
    names = {c["name"]: c for c in body["checks"]}
    assert names["database"]["status"] == "ok"
    assert names["blobStore"]["status"] == "ok"


def test_unknown_route_is_problem_json(server: ServerProcess) -> None:
    resp = server.anon().get("/api/v1/nope")
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["status"] == 404
