"""Statistics across two real server processes sharing one database.

Process A is the shared session server (flushing every 0.2 s); process B shares its database
and blob store but flushes only at shutdown (interval 1 hour), so B's figures reach the
database only through the graceful-shutdown flush. A scripted mix of Expo-header requests,
Lumora checks and SDK events (with repeats and retries) goes through both; the figures must
come out exact.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import BACKENDS
from device_helpers import expo_get
from harness import ServerProcess, create_project, make_export, publish_export

EMBEDDED = "11111111-1111-4111-8111-111111111111"


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], what: str) -> Any:
    """Call ``fetch`` until ``done(value)``; the value, or a failure naming ``what``."""
    deadline = time.monotonic() + 20
    value = fetch()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value: {value}")
        time.sleep(0.1)
        value = fetch()
    return value


def expo(server: ServerProcess, slug: str, **headers: str) -> Any:
    resp = expo_get(server, slug, **headers)
    assert resp.status_code == 200, resp.text
    return resp


def post_events(
    server: ServerProcess, slug: str, device: str, events: list[dict[str, Any]]
) -> None:
    with server.anon() as anon:
        resp = anon.post(
            "/api/v1/events", json={"deviceId": device, "projectId": slug, "events": events}
        )
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"accepted": len(events)}


def check_in(
    server: ServerProcess, slug: str, device: str, platform: str, **fields: Any
) -> dict[str, Any]:
    """A Lumora check by ``device``; the answer (an offered update is served to it)."""
    with server.anon() as anon:
        resp = anon.post(
            "/api/v1/updates/check",
            json={
                "projectId": slug,
                "channel": "production",
                "platform": platform,
                "runtimeVersion": "1",
                "deviceId": device,
                **fields,
            },
        )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def stats(server: ServerProcess, **params: str) -> dict[str, Any]:
    with server.client() as client:
        resp = client.get("/api/v1/stats", params=params)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_two_processes_add_up_exactly(
    server: ServerProcess,
    server_factory: Callable[..., ServerProcess],
    unique: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    backend = request.node.callspec.params["server"]
    slug = f"stats-{unique}"
    with server.client() as client:
        create_project(client, slug)
        answer, _ = publish_export(client, slug, make_export(tmp_path / "export", seed=unique))
    ids = {u["platform"]: u["id"] for u in answer["updates"]}
    ios, android = ids["ios"], ids["android"]
    a = server
    b = server_factory(
        backend,
        database_url=a.database_url,
        storage_url=a.storage_url or f"file://{a.data_dir / 'blobs'}",
        extra_env={"LUMORA_STATS_FLUSH_INTERVAL": "3600"},
    )

    # Expo clients (protocol 1, multipart), alternating between the two processes.
    expo(
        a,
        slug,
        eas_client_id="dev1",
        expo_embedded_update_id=EMBEDDED,
        expo_current_update_id=EMBEDDED,
    )  # offered ios
    expo(
        b, slug, eas_client_id="dev1", expo_embedded_update_id=EMBEDDED, expo_current_update_id=ios
    )  # runs it now
    expo(
        b,
        slug,
        eas_client_id="dev2",
        expo_embedded_update_id=EMBEDDED,
        expo_current_update_id=EMBEDDED,
    )  # offered ios
    expo(
        a, slug, eas_client_id="dev2", expo_embedded_update_id=EMBEDDED, expo_current_update_id=ios
    )  # runs it
    # dev3 is offered ios (a served-to record), crashes on it, then reports it as failed on
    # every request.
    expo(a, slug, eas_client_id="dev3", expo_embedded_update_id=EMBEDDED)
    for proc in (a, b):
        expo(
            proc,
            slug,
            eas_client_id="dev3",
            expo_embedded_update_id=EMBEDDED,
            expo_current_update_id=EMBEDDED,
            expo_recent_failed_update_ids=f'"{ios}"',
        )
    expo(b, slug)  # no device id: a check and nothing else
    # An SDK device checks through the Lumora API, then reports events (and retries them).
    with a.anon() as anon:
        resp = anon.post(
            "/api/v1/updates/check",
            json={
                "projectId": slug,
                "channel": "production",
                "platform": "android",
                "runtimeVersion": "1",
                "deviceId": "dev4",
            },
        )
    assert resp.status_code == 200 and resp.json()["updateAvailable"] is True
    sdk_events = [
        {"type": t, "updateId": android}
        for t in ("download_completed", "install", "launch_success")
    ]
    post_events(b, slug, "dev4", sdk_events)
    post_events(a, slug, "dev4", sdk_events)
    check_in(a, slug, "dev5", "android")  # served android: its reports count
    post_events(
        a,
        slug,
        "dev5",
        [
            {"type": "launch_failure", "updateId": android, "message": "boom"},
            {"type": "rollback", "updateId": android.upper()},  # case-insensitive
        ],
    )

    b.stop()  # graceful: B flushes everything it holds
    assert b.proc is not None and b.proc.returncode == 0

    expected = {
        "checks": 10,
        "downloads": 5,  # ios: dev1, dev2, dev3; android: dev4, dev5
        "installs": 5,
        "launchSuccesses": 3,  # ios: dev1, dev2; android: dev4
        "launchFailures": 2,  # ios: dev3; android: dev5
        "rollbacks": 1,
        "downloadFailures": 0,
        "uniqueDevices": 5,  # dev1..dev5 checked in
        "activeDevices": {"1d": 5, "7d": 5, "30d": 5},
        "successRate": 0.6,
        "failureRate": 0.4,
    }
    # A flushes on its own timer: wait until everything sent to it has landed. Counts only
    # grow, so an overshoot still fails (with the last value in the message).
    body = poll(lambda: stats(a, project=slug), lambda s: s["totals"] == expected, "totals")
    assert body["totals"] == expected
    today = body["daily"][-1]
    assert today["date"] == body["until"]
    assert {k: today[k] for k in ("checks", "downloads", "installs", "launchFailures")} == {
        "checks": 10,
        "downloads": 5,
        "installs": 5,
        "launchFailures": 2,
    }
    per_update = {u["updateId"]: u for u in body["updates"]}
    # The answers that offered it: dev1, dev2, dev3 (first request), anonymous.
    assert per_update[ios]["checks"] == 4
    assert per_update[ios]["activeDevices"] == {"1d": 2, "7d": 2, "30d": 2}
    assert (per_update[ios]["launchSuccesses"], per_update[ios]["launchFailures"]) == (2, 1)
    assert per_update[android]["checks"] == 2
    assert per_update[android]["rollbacks"] == 1
    assert per_update[ios]["health"]["status"] == "insufficientData"
    assert body["flags"] == []

    only_ios = stats(a, project=slug, update=ios)["totals"]
    assert (only_ios["checks"], only_ios["installs"], only_ios["uniqueDevices"]) == (4, 3, 3)
    assert stats(a, project=slug, channel="staging")["totals"]["checks"] == 0

    # /metrics: per-route request counts, and the cluster-wide figures from the database.
    def scrape() -> str:
        with a.client() as scraper:  # /metrics needs an all-projects key
            resp = scraper.get("/metrics")
        assert resp.status_code == 200
        return resp.text

    text = poll(scrape, lambda t: metric(t, "lumora_stats_checks", project=slug) == 10, "metrics")
    route = "/api/v1/expo/{project}/manifest"
    served = metric(text, "lumora_http_requests_total", method="GET", route=route, status="200")
    assert served is not None and served >= 3
    assert metric(text, "lumora_http_request_duration_seconds_count", method="GET", route=route)
    assert metric(text, "lumora_stats_device_outcomes", project=slug, outcome="install") == 5
    assert metric(text, "lumora_stats_active_devices", project=slug, window="1d") == 5
    assert metric(text, "lumora_updates_published", project=slug) == 2
    assert metric(text, "lumora_publishes", project=slug) == 1


def test_events_validation(server: ServerProcess, unique: str) -> None:
    slug = f"ev-{unique}"
    with server.client() as client:
        create_project(client, slug)
    with server.anon() as anon:

        def post(body: Any) -> Any:
            return anon.post("/api/v1/events", json=body)

        ok = {"deviceId": "d", "projectId": slug, "events": [{"type": "install", "updateId": "u"}]}
        assert post(ok).status_code == 202
        unknown = post({**ok, "projectId": f"nope-{unique}"})
        assert unknown.status_code == 404
        assert unknown.headers["content-type"].startswith("application/problem+json")
        for bad in (
            {**ok, "events": [{"type": "exploded"}]},
            {**ok, "events": []},
            {**ok, "events": [{"type": "install"}] * 101},
            {**ok, "extra": 1},
            {"projectId": slug, "events": [{"type": "install"}]},
            {**ok, "events": [{"type": "install", "at": "yesterday"}]},
            {**ok, "deviceId": ""},
        ):
            resp = post(bad)
            assert resp.status_code == 422, (bad, resp.text)
            assert resp.json()["status"] == 422
        malformed = anon.post(
            "/api/v1/events", content=b"{", headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 400
        nested = b'{"deviceId": "d", "projectId": "p", "events": [{"type": "install", "detail": '
        deep = anon.post(
            "/api/v1/events",
            content=nested + b'{"a":' * 100 + b"1" + b"}" * 100 + b"}]}",
            headers={"content-type": "application/json"},
        )
        assert deep.status_code == 400


def test_stats_access_and_range_checks(server: ServerProcess, unique: str) -> None:
    with server.client() as client:
        mine = create_project(client, f"mine-{unique}")
        other = create_project(client, f"other-{unique}")
        key = client.post(
            "/api/v1/keys", json={"name": "r", "role": "read", "project": mine["id"]}
        ).json()["key"]
        assert (
            client.get(
                "/api/v1/stats", params={"project": mine["slug"], "since": "2026-13-01"}
            ).status_code
            == 422
        )
        assert (
            client.get(
                "/api/v1/stats",
                params={"project": mine["slug"], "since": "2026-11-20", "until": "2026-11-10"},
            ).status_code
            == 422
        )
        body = client.get(
            "/api/v1/stats",
            params={"project": mine["slug"], "since": "2026-11-01", "until": "2026-11-03"},
        ).json()
        assert [d["date"] for d in body["daily"]] == ["2026-11-01", "2026-11-02", "2026-11-03"]
        assert body["thresholds"] == {
            "failureRate": 0.05,
            "minLaunches": 20,
            "minFailures": 10,
            "devicesPerSource": 3,
        }
    with server.client(key) as scoped:
        assert scoped.get("/api/v1/stats", params={"project": other["slug"]}).status_code == 404
        assert scoped.get("/api/v1/stats", params={"project": mine["slug"]}).status_code == 200
        assert scoped.get("/api/v1/stats").status_code == 200  # defaults to its project
    with server.anon() as anon:
        assert anon.get("/api/v1/stats").status_code == 401


@pytest.mark.parametrize("backend", BACKENDS)
def test_failing_update_is_flagged_and_auto_paused(
    server_factory: Callable[..., ServerProcess], unique: str, tmp_path: Path, backend: str
) -> None:
    # Every device checks from 127.0.0.1 here: lift the per-source cap, and ask for 2 failing
    # devices (test_security_stats.py covers the caps and the default minimum).
    server = server_factory(
        backend,
        extra_env={"LUMORA_HEALTH_MIN_FAILURES": "2", "LUMORA_STATS_DEVICES_PER_SOURCE": "100"},
    )
    slug = f"pause-{unique}"
    with server.client() as client:
        create_project(client, slug)
        patched = client.patch(f"/api/v1/projects/{slug}", json={"autoPauseOnFailure": True})
        assert patched.status_code == 200 and patched.json()["autoPauseOnFailure"] is True
        answer, _ = publish_export(client, slug, make_export(tmp_path / "export", seed=unique))
    ids = {u["platform"]: u["id"] for u in answer["updates"]}
    ios, android = ids["ios"], ids["android"]
    for device in [f"ok-{i}" for i in range(19)] + ["bad-0", "bad-1"]:
        assert check_in(server, slug, device, "ios")["updateAvailable"] is True
    # 19 devices launch ios fine; one fails: 1/20 = 5% is not above the 5% threshold.
    for i in range(19):
        post_events(server, slug, f"ok-{i}", [{"type": "launch_success", "updateId": ios}])
    post_events(server, slug, "bad-0", [{"type": "launch_failure", "updateId": ios}])
    body = poll(
        lambda: stats(server, project=slug),
        lambda s: s["totals"]["launchFailures"] == 1 and s["totals"]["launchSuccesses"] == 19,
        "the first failure",
    )
    assert body["flags"] == []
    with server.client() as client:
        assert client.get(f"/api/v1/updates/{ios}").json()["rollout"] == 100
    # A second failing device (reported twice) tips it over: 2/21 > 5%.
    for _ in range(2):
        post_events(server, slug, "bad-1", [{"type": "launch_failure", "updateId": ios}])

    def rollout() -> int:
        with server.client() as client:
            value: int = client.get(f"/api/v1/updates/{ios}").json()["rollout"]
        return value

    poll(rollout, lambda r: r == 0, "the auto-pause")
    body = stats(server, project=slug)
    assert [f["updateId"] for f in body["flags"]] == [ios]
    flag = body["flags"][0]
    assert (flag["launches"], flag["failures"], flag["flagged"]) == (21, 2, True)
    assert flag["failureRate"] == round(2 / 21, 4)
    with server.client() as client:
        audit = client.get("/api/v1/audit", params={"project": slug}).json()["items"]
        assert client.get(f"/api/v1/updates/{android}").json()["rollout"] == 100
    paused = [a for a in audit if a["action"] == "update.autoPause"]
    assert len(paused) == 1 and paused[0]["target"] == ios
    assert paused[0]["detail"]["previousRollout"] == 100
    # Devices are no longer offered the paused update.
    resp = expo_get(server, slug, eas_client_id="newcomer")
    assert ios not in resp.text
