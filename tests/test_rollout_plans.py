"""Rollout plans against real servers: a plan advances by itself through its steps, halts
when devices served the update fail above the maximum, and two processes sharing one
PostgreSQL database advance it exactly once per step."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import BACKENDS
from harness import ServerProcess, create_project, make_export, publish_export
from lumora_ota.domain.rollout import in_rollout
from stats_attack_helpers import EMBEDDED, manifest, served
from webhook_receiver import Receiver, receiver

# One test address stands for many devices here; a halt needs LUMORA_HEALTH_MIN_FAILURES.
FAST = {
    "LUMORA_PLAN_INTERVAL": "0.1",
    "LUMORA_STATS_DEVICES_PER_SOURCE": "1000",
    "LUMORA_HEALTH_MIN_FAILURES": "3",
}


def wait_for(done: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = done()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def published(server: ServerProcess, slug: str, tmp_path: Path) -> dict[str, Any]:
    with server.client() as client:
        create_project(client, slug)
        answer, _ = publish_export(client, slug, make_export(tmp_path / "export", seed=slug))
    return answer


def plan_of(client: httpx.Client, ref: str) -> list[dict[str, Any]]:
    resp = client.get(f"/api/v1/updates/{ref}/rollout-plan")
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


def audit(client: httpx.Client, slug: str, action: str) -> list[dict[str, Any]]:
    items = client.get("/api/v1/audit", params={"project": slug, "limit": 200}).json()["items"]
    return [a for a in items if a["action"] == action]


@pytest.mark.parametrize("backend", BACKENDS)
def test_plan_reaches_100_by_itself(
    server_factory: Callable[..., ServerProcess], backend: str, unique: str, tmp_path: Path
) -> None:
    server = server_factory(backend, extra_env=FAST)
    slug = f"plan-{unique}"
    answer = published(server, slug, tmp_path)
    group = answer["groupId"]
    with server.client() as client:
        resp = client.put(
            f"/api/v1/updates/{group}/rollout-plan",
            json={"steps": [1, 10, 50, 100], "stepSeconds": 1, "maxFailureRate": 0.02},
        )
        assert resp.status_code == 200, resp.text
        items = resp.json()["items"]
        assert len(items) == len(answer["updates"])
        assert {p["rollout"] for p in items} == {1}
        assert all(p["status"] == "active" and p["nextStep"] == 10 for p in items)
        assert all(p["nextStepAt"] is not None for p in items)
        seen: set[int] = set()

        def done() -> bool:
            plans = plan_of(client, group)
            seen.update(p["rollout"] for p in plans)
            return all(p["status"] == "completed" for p in plans)

        wait_for(done, "the plan to complete")
        group_now = client.get(f"/api/v1/groups/{group}").json()
        assert {u["rollout"] for u in group_now["updates"]} == {100}
        assert seen <= {1, 10, 50, 100}
        advances = audit(client, slug, "rolloutPlan.advance")
        # Three steps per platform's update, each once.
        assert len(advances) == 3 * len(answer["updates"])
        ios = next(u["id"] for u in answer["updates"] if u["platform"] == "ios")
        steps = sorted(a["detail"]["rollout"] for a in advances if a["target"] == ios)
        assert steps == [10, 50, 100]


@pytest.mark.parametrize("backend", BACKENDS)
def test_plan_halts_on_failures_of_served_devices_and_resumes(
    server_factory: Callable[..., ServerProcess], backend: str, unique: str, tmp_path: Path
) -> None:
    server = server_factory(backend, extra_env={**FAST, "LUMORA_WEBHOOK_ALLOW_PRIVATE": "1"})
    slug = f"halt-{unique}"
    with receiver() as rx:
        _halts(server, slug, tmp_path, rx)


def _halts(server: ServerProcess, slug: str, tmp_path: Path, rx: Receiver) -> None:
    with server.client() as client:
        create_project(client, slug)
        events = ["rollout_plan.halted", "update.flagged"]
        resp = client.post(
            f"/api/v1/projects/{slug}/webhooks", json={"url": rx.url, "events": events}
        )
        assert resp.status_code == 201, resp.text
        answer, _ = publish_export(client, slug, make_export(tmp_path / "export", seed=slug))
    ios = next(u["id"] for u in answer["updates"] if u["platform"] == "ios")
    with server.client() as client:
        resp = client.put(
            f"/api/v1/updates/{ios}/rollout-plan",
            json={"steps": [50, 100], "stepSeconds": 3600, "maxFailureRate": 0.02},
        )
        assert resp.status_code == 200, resp.text
        assert client.post(f"/api/v1/updates/{ios}/rollout-plan/resume").status_code == 409
    devices = [d for d in (f"dev-{i}" for i in range(200)) if in_rollout(ios, d, 50)][:10]
    with server.anon() as anon:
        for device in devices:
            served(anon, slug, device, ios)
        for device in devices[:3]:  # 3 of 10 launches fail: 30% > 2%
            manifest(
                anon,
                slug,
                eas_client_id=device,
                expo_embedded_update_id=EMBEDDED,
                expo_recent_failed_update_ids=f'"{ios}"',
            )
    with server.client() as client:
        plan = wait_for(
            lambda: next((p for p in plan_of(client, ios) if p["status"] == "halted"), None),
            "the halt",
        )
        assert plan["rollout"] == 50  # frozen where it was
        assert "above the maximum" in plan["haltReason"]
        assert plan["gate"]["failures"] >= 3
        halts = audit(client, slug, "rolloutPlan.halt")
        assert len(halts) == 1 and halts[0]["target"] == ios
        # Resuming while the figures are still bad halts it again, audited again.
        resp = client.post(f"/api/v1/updates/{ios}/rollout-plan/resume")
        assert resp.status_code == 200, resp.text
        wait_for(lambda: len(audit(client, slug, "rolloutPlan.halt")) == 2, "the second halt")
        resp = client.delete(f"/api/v1/updates/{ios}/rollout-plan")
        assert resp.json() == {"cleared": [ios]}
        assert plan_of(client, ios) == []
    rx.wait_for(lambda got: len(got) >= 4)  # two halts, each halted + flagged
    bodies = [json.loads(r.body) for r in rx.received]
    assert sorted(b["type"] for b in bodies) == sorted(events * 2)
    halted = next(b for b in bodies if b["type"] == "rollout_plan.halted")
    assert halted["data"]["updateId"] == ios and "above the maximum" in halted["data"]["reason"]


def test_bad_plans_get_problems(server: ServerProcess, unique: str, tmp_path: Path) -> None:
    slug = f"badplan-{unique}"
    answer = published(server, slug, tmp_path)
    group = answer["groupId"]
    with server.client() as client:
        for body in (
            {"steps": [10, 5], "stepSeconds": 1},
            {"steps": [], "stepSeconds": 1},
            {"steps": [1, 100], "stepSeconds": -1},
            {"steps": [1, 100], "stepSeconds": 1, "maxFailureRate": 2},
            {"steps": ["1"], "stepSeconds": 1},
            {"steps": [1, 100]},
        ):
            resp = client.put(f"/api/v1/updates/{group}/rollout-plan", json=body)
            assert resp.status_code == 422, (body, resp.text)
            assert resp.headers["content-type"].startswith("application/problem+json")
        resp = client.put(
            "/api/v1/updates/nope/rollout-plan", json={"steps": [1], "stepSeconds": 1}
        )
        assert resp.status_code == 404
        # Nothing changed.
        assert {u["rollout"] for u in client.get(f"/api/v1/groups/{group}").json()["updates"]} == {
            100
        }


@pytest.mark.skipif("postgres" not in BACKENDS, reason="needs PostgreSQL")
def test_two_processes_advance_each_step_once(
    server_factory: Callable[..., ServerProcess], unique: str, tmp_path: Path
) -> None:
    env = {**FAST, "LUMORA_PLAN_INTERVAL": "0.05"}
    first = server_factory("postgres", extra_env=env)
    server_factory("postgres", database_url=first.database_url, extra_env=env)
    slug = f"twice-{unique}"
    answer = published(first, slug, tmp_path)
    group = answer["groupId"]
    with first.client() as client:
        resp = client.put(
            f"/api/v1/updates/{group}/rollout-plan",
            json={"steps": [1, 2, 3, 4, 5, 100], "stepSeconds": 0},
        )
        assert resp.status_code == 200, resp.text
        wait_for(
            lambda: all(p["status"] == "completed" for p in plan_of(client, group)),
            "the plan to complete",
        )
        advances = audit(client, slug, "rolloutPlan.advance")
    assert len(advances) == 5 * len(answer["updates"])
    pairs = [(a["target"], a["detail"]["step"]) for a in advances]
    assert len(set(pairs)) == len(pairs)


def test_a_rolled_back_update_stops_its_plan(
    server_factory: Callable[..., ServerProcess], unique: str, tmp_path: Path
) -> None:
    server = server_factory("sqlite", extra_env=FAST)
    slug = f"rb-{unique}"
    answer = published(server, slug, tmp_path)
    ios = next(u["id"] for u in answer["updates"] if u["platform"] == "ios")
    with server.client() as client:
        plan = {"steps": [10, 100], "stepSeconds": 3600}
        assert client.put(f"/api/v1/updates/{ios}/rollout-plan", json=plan).status_code == 200
        assert client.post(f"/api/v1/updates/{ios}/rollback", json={}).status_code == 200
        stopped = wait_for(
            lambda: next((p for p in plan_of(client, ios) if p["status"] == "halted"), None),
            "the plan to stop",
        )
        assert stopped["haltReason"] == "the update was rolled back"
        assert client.get(f"/api/v1/updates/{ios}").json()["rollout"] == 10
