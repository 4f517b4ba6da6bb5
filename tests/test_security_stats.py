"""Security issue 15, items 2 and 3: what anonymous devices can make the server decide or
store, against real ``lumora serve`` processes (SQLite and PostgreSQL).

Item 2: anonymous devices must not pause a rollout, nor hide a real crash. Reports count only
from devices the update was served to, once per device, at most ``devices_per_source`` of them
per client address, and auto-pause needs ``min_failures`` failing devices. The three attacks of
the issue are reproduced as they were made (all fail on the code before the fix), plus the
determined variant (devices that ask first, from one address) and the real crash that must
still pause.

Item 3: anonymous traffic must not grow storage with requests: made-up ids in
``expo-recent-failed-update-ids`` or events, random channel names and repeated reports add no
rows; rows grow with devices and updates only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import BACKENDS
from harness import ServerProcess, create_project, make_export, publish_export
from stats_attack_helpers import (
    EMBEDDED,
    database,
    from_address,
    manifest,
    post_events,
    rollout,
    row_counts,
    served,
    wait_flushed,
)

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


def paused_project(
    server_factory: Callable[..., ServerProcess], backend: str, unique: str, tmp_path: Path
) -> tuple[ServerProcess, str, str, str]:
    """A server with default health settings and a project with auto-pause on, published:
    (server, slug, project id, the ios update id)."""
    server = server_factory(backend)
    slug = f"atk-{unique}"
    with server.client() as client:
        project = create_project(client, slug)
        resp = client.patch(f"/api/v1/projects/{slug}", json={"autoPauseOnFailure": True})
        assert resp.status_code == 200
        answer, _ = publish_export(client, slug, make_export(tmp_path / "export", seed=unique))
    ios = next(u["id"] for u in answer["updates"] if u["platform"] == "ios")
    return server, slug, project["id"], ios


def report(server: ServerProcess, slug: str, update_id: str) -> dict[str, Any]:
    with server.client() as client:
        resp = client.get("/api/v1/stats", params={"project": slug, "update": update_id})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_made_up_failure_events_do_not_pause(
    server_factory: Callable[..., ServerProcess], backend: str, unique: str, tmp_path: Path
) -> None:
    """Attack 1: 20 POST /api/v1/events with made-up deviceIds and launch_failure."""
    server, slug, project_id, ios = paused_project(server_factory, backend, unique, tmp_path)
    with server.anon() as anon:
        for i in range(20):
            post_events(anon, slug, f"fake-{i}", [{"type": "launch_failure", "updateId": ios}])
    wait_flushed(server, slug, project_id)
    assert rollout(server, ios) == 100
    totals = report(server, slug, ios)["totals"]
    assert totals["launchFailures"] == 0


def test_made_up_failed_ids_header_does_not_pause(
    server_factory: Callable[..., ServerProcess], backend: str, unique: str, tmp_path: Path
) -> None:
    """Attack 2: 20 manifest GETs with expo-recent-failed-update-ids naming the update."""
    server, slug, project_id, ios = paused_project(server_factory, backend, unique, tmp_path)
    with server.anon() as anon:
        for i in range(20):
            manifest(
                anon,
                slug,
                eas_client_id=f"fake-{i}",
                expo_embedded_update_id=EMBEDDED,
                expo_recent_failed_update_ids=f'"{ios}"',
            )
    wait_flushed(server, slug, project_id)
    assert rollout(server, ios) == 100
    assert report(server, slug, ios)["totals"]["launchFailures"] == 0


def test_claimed_launches_do_not_dilute_a_real_crash(
    server_factory: Callable[..., ServerProcess], backend: str, unique: str, tmp_path: Path
) -> None:
    """Attack 3: 600 GETs claiming to run the update dilute 25 real failures (25/625 = 4%,
    under the 5% threshold) when every claim counts."""
    server, slug, project_id, ios = paused_project(server_factory, backend, unique, tmp_path)
    with server.anon() as anon:
        for i in range(600):
            manifest(
                anon,
                slug,
                eas_client_id=f"claim-{i}",
                expo_embedded_update_id=EMBEDDED,
                expo_current_update_id=ios,
            )
    # 25 real devices, each on its own address, are served the update and crash on it.
    for i in range(25):
        with from_address(server, 10 + i) as device:
            served(device, slug, f"real-{i}", ios)
    for i in range(25):
        with from_address(server, 10 + i) as device:
            manifest(
                device,
                slug,
                eas_client_id=f"real-{i}",
                expo_embedded_update_id=EMBEDDED,
                expo_recent_failed_update_ids=f'"{ios}"',
            )
    wait_flushed(server, slug, project_id)
    assert rollout(server, ios) == 0
    health = report(server, slug, ios)["updates"][0]["health"]
    assert (health["launches"], health["failures"], health["flagged"]) == (25, 25, True)


def test_one_address_cannot_pause_even_with_served_devices(
    server_factory: Callable[..., ServerProcess], backend: str, unique: str, tmp_path: Path
) -> None:
    """The determined variant: 30 invented devices from one address each ask first (so the
    update is served to them), then report it failed, by header and by event. They count in
    the plain figures, but at most ``devices_per_source`` (3) of them in the health figure,
    below the 10 failing devices auto-pause needs."""
    server, slug, project_id, ios = paused_project(server_factory, backend, unique, tmp_path)
    with from_address(server, 7) as attacker:
        for i in range(30):
            device = f"sly-{i}"
            served(attacker, slug, device, ios)
            manifest(
                attacker,
                slug,
                eas_client_id=device,
                expo_embedded_update_id=EMBEDDED,
                expo_recent_failed_update_ids=f'"{ios}"',
            )
            post_events(attacker, slug, device, [{"type": "launch_failure", "updateId": ios}])
    wait_flushed(server, slug, project_id)
    assert rollout(server, ios) == 100
    body = report(server, slug, ios)
    assert body["totals"]["launchFailures"] == 30  # the figure shows them ...
    health = body["updates"][0]["health"]
    assert (health["failures"], health["flagged"]) == (3, False)  # ... health caps them


def test_a_real_crash_from_many_addresses_still_pauses(
    server_factory: Callable[..., ServerProcess], backend: str, unique: str, tmp_path: Path
) -> None:
    """The control: 24 devices on 24 addresses, served the update; 12 launch it, 8 fail by
    header and 4 by SDK event: 12 failing devices of 24 launches pause it."""
    server, slug, project_id, ios = paused_project(server_factory, backend, unique, tmp_path)
    for i in range(24):
        with from_address(server, 40 + i) as device:
            served(device, slug, f"dev-{i}", ios)
    for i in range(24):
        with from_address(server, 40 + i) as device:
            name = f"dev-{i}"
            if i < 12:
                manifest(
                    device,
                    slug,
                    eas_client_id=name,
                    expo_embedded_update_id=EMBEDDED,
                    expo_current_update_id=ios,
                )
            elif i < 20:
                manifest(
                    device,
                    slug,
                    eas_client_id=name,
                    expo_embedded_update_id=EMBEDDED,
                    expo_recent_failed_update_ids=f'"{ios}"',
                )
            else:
                post_events(device, slug, name, [{"type": "launch_failure", "updateId": ios}])
    wait_flushed(server, slug, project_id)
    assert rollout(server, ios) == 0
    with server.client() as client:
        audit = client.get("/api/v1/audit", params={"project": slug}).json()["items"]
    paused = [a for a in audit if a["action"] == "update.autoPause"]
    # Paused once, by the flush that first saw 10 or more failing devices.
    assert len(paused) == 1 and 10 <= paused[0]["detail"]["failures"] <= 12
    health = report(server, slug, ios)["updates"][0]["health"]
    assert (health["launches"], health["failures"]) == (24, 12)


def test_flood_of_made_up_ids_grows_storage_by_devices_not_requests(
    server_factory: Callable[..., ServerProcess], backend: str, unique: str, tmp_path: Path
) -> None:
    """Item 3: 200 manifest GETs from 5 devices, each naming 50 random ids in
    expo-recent-failed-update-ids (the issue's flood added 30,000 rows), 100 GETs with random
    channel names, and 50 event batches naming random updates."""
    server, slug, project_id, _ = paused_project(server_factory, backend, unique, tmp_path)
    devices = [f"flood-{i}" for i in range(5)]
    with server.anon() as anon:
        for i in range(200):
            random_ids = ", ".join(f'"{uuid.uuid4()}"' for _ in range(50))
            manifest(
                anon,
                slug,
                eas_client_id=devices[i % 5],
                expo_embedded_update_id=EMBEDDED,
                expo_recent_failed_update_ids=random_ids,
            )
        for _ in range(100):
            manifest(
                anon,
                slug,
                eas_client_id=devices[0],
                expo_channel_name=f"chan-{uuid.uuid4().hex}",
            )
        for _ in range(50):
            post_events(
                anon,
                slug,
                devices[1],
                [{"type": "launch_failure", "updateId": str(uuid.uuid4())} for _ in range(100)],
            )
    wait_flushed(server, slug, project_id)
    with database(server) as engine:
        counts = row_counts(engine, project_id)
    # 5 flood devices + 2 sentinels; 2 updates; today only; channels: production and "".
    assert counts["device_update_facts"] == 0, counts
    assert counts["device_state"] == 7, counts
    assert counts.get("device_served", 0) <= 7, counts
    assert counts["device_days"] <= 7 * 2, counts
    assert counts["stat_counters"] <= 4, counts


def test_requests_from_one_device_add_no_rows_once_counted(
    server_factory: Callable[..., ServerProcess], backend: str, unique: str, tmp_path: Path
) -> None:
    """Repeated reports (the same device, update and outcome) never add rows."""
    server, slug, project_id, ios = paused_project(server_factory, backend, unique, tmp_path)
    with server.anon() as anon:
        served(anon, slug, "steady", ios)
        wait_flushed(server, slug, project_id)
        with database(server) as engine:
            before = row_counts(engine, project_id)
        for _ in range(50):
            manifest(
                anon,
                slug,
                eas_client_id="steady",
                expo_embedded_update_id=EMBEDDED,
                expo_current_update_id=ios,
                expo_recent_failed_update_ids=f'"{ios}", "{uuid.uuid4()}"',
            )
    wait_flushed(server, slug, project_id)
    with database(server) as engine:
        after = row_counts(engine, project_id)
    # The running and failure facts of one (device, update), and 2 sentinels' rows.
    assert after["device_update_facts"] - before["device_update_facts"] == 4
    assert after["device_state"] - before["device_state"] == 2
    # At most one counter row: the checks that offered nothing ("device already on it").
    assert after["stat_counters"] - before["stat_counters"] <= 1


def test_invented_device_ids_add_rows_only_up_to_a_per_address_cap(
    server_factory: Callable[..., ServerProcess], backend: str, unique: str, tmp_path: Path
) -> None:
    """Invented device ids are the one way requests add rows (3 per device); one address
    adds at most LUMORA_STATS_NEW_DEVICES_PER_SOURCE new devices a day, the rest count as
    checks only. Devices of other addresses (the sentinels, from 127.0.0.1) still count."""
    server = server_factory(backend, extra_env={"LUMORA_STATS_NEW_DEVICES_PER_SOURCE": "20"})
    slug = f"inv-{unique}"
    with server.client() as client:
        project = create_project(client, slug)
        published, _ = publish_export(client, slug, make_export(tmp_path / "export", seed=unique))
    ios = next(u["id"] for u in published["updates"] if u["platform"] == "ios")
    with from_address(server, 9) as attacker:
        for _ in range(200):
            manifest(attacker, slug, eas_client_id=uuid.uuid4().hex)
        for _ in range(50):  # events of invented devices draw on the same budget
            post_events(attacker, slug, uuid.uuid4().hex, [{"type": "install", "updateId": ios}])
    wait_flushed(server, slug, project["id"])
    with database(server) as engine:
        counts = row_counts(engine, project["id"])
    assert counts["device_state"] == 20 + 2, counts
    assert counts["device_days"] == 20 + 2, counts
    assert counts["device_update_facts"] == 0, counts
    with server.client() as client:
        totals = client.get("/api/v1/stats", params={"project": slug}).json()["totals"]
    assert totals["checks"] == 200 + 2
