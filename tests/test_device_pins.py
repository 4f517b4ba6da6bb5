"""Device pinning and the device timeline against real servers (issue 19)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from device_helpers import new_project, publish_small
from harness import ServerProcess
from stats_attack_helpers import EMBEDDED, manifest, wait_until


def check(server: ServerProcess, **body: Any) -> Any:
    payload = {"platform": "ios", "runtimeVersion": "1", **body}
    with server.anon() as client:
        resp = client.post("/api/v1/updates/check", json=payload)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_a_pinned_device_gets_its_channel_and_its_timeline_says_why(
    server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    project = new_project(server, unique, "pin")
    prod = publish_small(server, project, tmp_path / "p")["ios"]
    staging = publish_small(server, project, tmp_path / "s", channel="staging")["ios"]
    with server.client() as client:
        resp = client.put(f"/api/v1/projects/{project}/devices/qa-1", json={"channel": "staging"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["channel"] == "staging"
        listed = client.get(f"/api/v1/projects/{project}/devices").json()["items"]
        assert [(p["deviceId"], p["channel"]) for p in listed] == [("qa-1", "staging")]
    # The check API and the Expo protocol both honour the pin, whatever channel is asked.
    assert check(server, projectId=project, deviceId="qa-1")["manifest"]["id"] == staging["id"]
    assert check(server, projectId=project, deviceId="other")["manifest"]["id"] == prod["id"]
    with server.anon() as anon:
        pinned = manifest(
            anon, project, eas_client_id="qa-1", expo_channel_name="production",
            expo_embedded_update_id=EMBEDDED,
        )  # fmt: skip
        assert staging["id"] in pinned.text and prod["id"] not in pinned.text
    with server.client() as client:

        def served_recorded() -> bool:
            resp = client.get(f"/api/v1/projects/{project}/devices/qa-1")
            return resp.status_code == 200 and any(
                e["type"] == "served" for e in resp.json()["timeline"]
            )

        wait_until(served_recorded, "the served record")
        view = client.get(f"/api/v1/projects/{project}/devices/qa-1").json()
        assert view["pin"]["channel"] == "staging"
        served = next(e for e in view["timeline"] if e["type"] == "served")
        assert served["updateId"] == staging["id"]
        why = served["why"]
        assert why["channel"] == "staging" and why["pinned"] is True and why["inRollout"]
        assert why["recorded"] is True and why["rollout"] == 100
        assert 0 <= why["rolloutBucket"] < 100
        assert view["lastCheck"]["channel"] == "staging"
        # Renaming the channel keeps the pin on it.
        channels = client.get("/api/v1/deployments", params={"project": project}).json()["items"]
        staging_id = next(c["id"] for c in channels if c["name"] == "staging")
        resp = client.put(f"/api/v1/deployments/{staging_id}", json={"name": "beta"})
        assert resp.status_code == 200, resp.text
        pins = client.get(f"/api/v1/projects/{project}/devices").json()["items"]
        assert [p["channel"] for p in pins] == ["beta"]
    assert check(server, projectId=project, deviceId="qa-1")["manifest"]["id"] == staging["id"]
    with server.client() as client:
        # Unpinned: the device gets what it asks for again.
        assert client.delete(f"/api/v1/projects/{project}/devices/qa-1").status_code == 200
        assert client.delete(f"/api/v1/projects/{project}/devices/qa-1").status_code == 404
    assert check(server, projectId=project, deviceId="qa-1")["manifest"]["id"] == prod["id"]


def test_bad_pins_are_refused(server: ServerProcess, unique: str, tmp_path: Path) -> None:
    project = new_project(server, unique, "badpin")
    with server.client() as client:
        url = f"/api/v1/projects/{project}/devices/qa-1"
        assert client.put(url, json={"channel": "nope"}).status_code == 422
        assert client.put(url, json={"channel": "bad channel!"}).status_code == 422
        assert client.put(url, json={}).status_code == 422
        long_id = "x" * 201
        resp = client.put(f"/api/v1/projects/{project}/devices/{long_id}", json={"channel": "a"})
        assert resp.status_code == 422
        resp = client.put("/api/v1/projects/nope/devices/qa-1", json={"channel": "production"})
        assert resp.status_code == 404
        assert client.get(f"/api/v1/projects/{project}/devices/never-seen").status_code == 404
        assert client.get(f"/api/v1/projects/{project}/devices").json() == {"items": []}
