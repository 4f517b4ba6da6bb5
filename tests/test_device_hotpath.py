"""The device hot path: no SQL per request in steady state, and a cache that follows publishes
made by this process (at once) and by other processes sharing the database (by polling)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from device_helpers import expo_headers, in_process_app, new_project, publish_small
from harness import ServerProcess, create_project, make_export, publish_export


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """An in-process app on SQLite whose poller and stats flusher stay quiet during a test."""
    quiet = {"plan_interval": 3600, "webhook_poll_interval": 60}  # issue 19's workers
    with in_process_app(
        tmp_path, cache_poll_interval=3600, stats_flush_interval=3600, **quiet
    ) as pair:
        yield pair


def count_statements(engine: Any) -> tuple[list[str], Any]:
    """Record SQL run by request handling (the background variant worker is not a request)."""
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not threading.current_thread().name.startswith("variants"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", on_execute)
    return seen, on_execute


def test_steady_state_runs_no_sql(app_client: tuple[Any, Any], tmp_path: Path) -> None:
    client, ctx = app_client
    create_project(client, "hot")
    root = make_export(tmp_path / "export", seed="hot")
    answer, _ = publish_export(client, "hot", root)
    ios = next(u for u in answer["updates"] if u["platform"] == "ios")
    asset_path = "/api/v1/assets/" + ios["launchAsset"]["sha256"] + ".js"
    check_body = {"projectId": "hot", "platform": "ios", "runtimeVersion": "1", "deviceId": "d1"}

    def one_round(device: str) -> None:
        resp = client.get("/api/v1/expo/hot/manifest", headers=expo_headers(eas_client_id=device))
        assert resp.status_code == 200
        resp = client.post("/api/v1/updates/check", json={**check_body, "deviceId": device})
        assert resp.json()["manifest"]["id"] == ios["id"]
        assert client.get(asset_path).status_code == 200

    seen, listener = count_statements(ctx.engine)
    try:
        one_round("warm-up")  # first use loads the cache...
        assert seen, "the listener sees the loading queries"
        seen.clear()
        for i in range(25):  # ...and from then on memory answers
            one_round(f"device-{i}")
    finally:
        event.remove(ctx.engine, "before_cursor_execute", listener)
    assert seen == []


def test_local_publish_is_served_at_once(app_client: tuple[Any, Any], tmp_path: Path) -> None:
    client, _ = app_client
    create_project(client, "fresh")
    body = {"projectId": "fresh", "platform": "android", "runtimeVersion": "1"}
    assert client.post("/api/v1/updates/check", json=body).json()["updateAvailable"] is False
    for n in range(3):
        answer, _ = publish_export(client, "fresh", make_export(tmp_path / f"e{n}", seed=f"s{n}"))
        android = next(u for u in answer["updates"] if u["platform"] == "android")
        # No waiting: the commit that bumped the revision dropped this process's cache.
        served = client.post("/api/v1/updates/check", json=body).json()
        assert served["manifest"]["id"] == android["id"]


def test_unknown_projects_and_channels_do_not_hit_the_database_each_time(
    app_client: tuple[Any, Any],
) -> None:
    client, ctx = app_client
    create_project(client, "known")
    body = {"projectId": "ghost", "platform": "ios", "runtimeVersion": "1"}
    assert client.post("/api/v1/updates/check", json=body).status_code == 404
    seen, listener = count_statements(ctx.engine)
    try:
        for i in range(20):
            assert client.post("/api/v1/updates/check", json=body).status_code == 404
            # Devices naming channels nobody published to are answered from the project map.
            resp = client.get(
                "/api/v1/expo/known/manifest", headers=expo_headers(expo_channel_name=f"c{i}")
            )
            assert resp.status_code == 200
    finally:
        event.remove(ctx.engine, "before_cursor_execute", listener)
    assert len(seen) <= 2  # at most one map refresh per poll interval


def test_other_processes_publishes_are_picked_up(
    server: ServerProcess, server_factory: Any, unique: str, tmp_path: Path
) -> None:
    backend = "sqlite" if server.database_url.startswith("sqlite") else "postgres"
    reader = server_factory(backend, database_url=server.database_url)
    slug = new_project(server, unique, "xproc")
    first = publish_small(server, slug, tmp_path)["ios"]
    body = {"projectId": slug, "platform": "ios", "runtimeVersion": "1"}

    def served_by_reader() -> str | None:
        with httpx.Client(base_url=reader.url, timeout=10) as client:
            answer = client.post("/api/v1/updates/check", json=body).json()
        return answer.get("manifest", {}).get("id")

    def eventually(expected: str) -> None:
        deadline = time.monotonic() + 15
        while served_by_reader() != expected:
            assert time.monotonic() < deadline, "the reader never saw the publish"
            time.sleep(0.05)

    eventually(first["id"])  # the reader's cache now holds this channel
    second = publish_small(server, slug, tmp_path)["ios"]
    eventually(second["id"])  # the writer's revision bump reached the reader's poller
    with server.client() as client:
        resp = client.post(f"/api/v1/updates/{second['id']}/rollback", json={})
    assert resp.status_code in (200, 201), resp.text
    eventually(resp.json()["replacement"]["id"])  # the first update, republished
