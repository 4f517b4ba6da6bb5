"""The device endpoint table (``server/endpoints.py``): the routes, the edge's matcher, the
rate-limit and CORS policies and the metric labels all come from it (issue 18 item 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import Route

from device_helpers import in_process_app
from harness import ServerProcess, create_project, make_export, publish_export
from lumora_ota.server.device.cors import is_cors_request
from lumora_ota.server.endpoints import DEVICE_ENDPOINTS, device_endpoint_of
from lumora_ota.server.middleware import is_device_request


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {"type": "http", "method": method, "path": path, "headers": headers or []}


def _example(template: str) -> str:
    """A concrete path for a route template (every parameter filled in)."""
    path = template
    while "{" in path:
        start = path.index("{")
        path = path[:start] + "x" * 64 + path[path.index("}", start) + 1 :]
    return path


def _routes(app: Any) -> list[tuple[str, set[str]]]:
    """(path template, methods) of every HTTP route of ``app``, included routers flattened
    (FastAPI keeps an included router as one entry that knows its effective routes)."""
    found: list[tuple[str, set[str]]] = []
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            found += [(c.path_format, set(c.methods or ())) for c in contexts()]
        elif isinstance(route, (APIRoute, Route)):
            found.append((route.path_format, set(route.methods or ())))
    return found


def test_every_route_is_classified_by_the_table(tmp_path: Path) -> None:
    """Each route of the real app is a device request (rate limited, CORS) exactly when the
    table lists its method and template: a management route under a device prefix never is."""
    device = {(m, e.path) for e in DEVICE_ENDPOINTS for m in e.methods}
    with in_process_app(tmp_path) as (client, _ctx):
        routes = _routes(client.app)
    assert len(routes) > 30
    seen = set()
    for path, methods in routes:
        for method in methods:
            scope = _scope(method, _example(path))
            expected = (method, path) in device
            if expected:
                seen.add((method, path))
            assert is_device_request(scope) is expected, (method, path)
            assert is_cors_request(scope) is expected, (method, path)
    assert seen == device  # every endpoint of the table has its route


def test_management_asset_routes_are_not_device_requests() -> None:
    for method, path in [
        ("POST", "/api/v1/assets/missing"),
        ("PUT", "/api/v1/assets/" + "a" * 64),
    ]:
        assert device_endpoint_of(_scope(method, path)) is None
        # A browser's preflight for them is not device CORS either (same-origin API).
        preflight = _scope("OPTIONS", path, [(b"access-control-request-method", method.encode())])
        assert device_endpoint_of(preflight) is None
    preflight = _scope(
        "OPTIONS", "/api/v1/assets/" + "a" * 64, [(b"access-control-request-method", b"GET")]
    )
    assert device_endpoint_of(preflight) is not None


def test_admin_uploads_are_never_rate_limited_by_device_limits(
    server_factory: Any, tmp_path: Path
) -> None:
    """With per-IP device limits on, an admin's ``POST /api/v1/assets/missing`` and uploads
    from the same address never get 429; device requests from it do."""
    srv: ServerProcess = server_factory("sqlite", extra_env={"LUMORA_RATE_LIMIT_PER_IP": "1/2"})
    with srv.client() as admin:
        create_project(admin, "limited")
        for seed in range(3):  # each: missing -> uploads -> publish
            root = make_export(tmp_path / f"e{seed}", seed=f"s{seed}", n_assets=3)
            publish_export(admin, "limited", root)
        statuses = [
            admin.post(
                "/api/v1/assets/missing", json={"project": "limited", "hashes": ["0" * 64]}
            ).status_code
            for _ in range(6)
        ]
        assert statuses == [200] * 6
    with srv.anon() as device:
        codes = [device.get("/api/v1/expo/limited/manifest").status_code for _ in range(5)]
        assert 429 in codes, codes


def test_device_answers_match_their_models(tmp_path: Path) -> None:
    """The check and events answers are hand-written bytes (the hot path): each shape they
    take validates against the documented model, with no member the model lacks."""
    from lumora_ota.server.device.check import CheckResponse
    from lumora_ota.server.device.events import EventsAccepted
    from lumora_ota.signing import generate_signing_identity

    with in_process_app(tmp_path) as (client, _ctx):
        create_project(client, "models")
        answer, _ = publish_export(client, "models", make_export(tmp_path / "e", seed="m"))
        update_id = answer["updates"][0]["id"]
        body = {"projectId": "models", "platform": "ios", "runtimeVersion": "1", "deviceId": "d"}
        shapes = [
            client.post("/api/v1/updates/check", json=body),
            client.post("/api/v1/updates/check", json={**body, "currentUpdateId": update_id}),
            client.post("/api/v1/updates/check", json={**body, "runtimeVersion": "9"}),
        ]
        key_pem, cert_pem = generate_signing_identity("models")
        client.put(
            "/api/v1/projects/models/signing",
            json={
                "keyid": "main",
                "privateKeyPem": key_pem.decode(),
                "certificatePem": cert_pem.decode(),
            },
        ).raise_for_status()
        shapes.append(client.post("/api/v1/updates/check", json={**body, "signed": True}))
        events = client.post(
            "/api/v1/events",
            json={
                "deviceId": "d",
                "projectId": "models",
                "events": [{"type": "install", "updateId": update_id}],
            },
        )
    for response in shapes:
        assert response.status_code == 200, response.text
        CheckResponse.model_validate(response.json())
    assert shapes[0].json()["updateAvailable"] is True
    assert "signature" in shapes[-1].json()
    assert events.status_code == 202, events.text
    EventsAccepted.model_validate(events.json(), strict=True)
