"""Issue 17, point 7: statistics of plain Expo apps, which send no events.

An unmodified expo-updates client tells the server, on every manifest request, which update it
runs (``expo-current-update-id``), which one it shipped with (``expo-embedded-update-id``) and
which recent ones failed to launch (``expo-recent-failed-update-ids``). Those headers alone
must give the figures: a device running an update is active on it (1/7/30 days) and has
installed and launched it; moving to a newer update is an install of it; a failed id is a
launch failure; all within the served-to limits of security issue 15.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import BACKENDS
from harness import ServerProcess, create_project, make_export, publish_export
from stats_attack_helpers import EMBEDDED, manifest, wait_flushed


def figures(server: ServerProcess, slug: str, update_id: str) -> dict[str, Any]:
    with server.client() as client:
        resp = client.get("/api/v1/stats", params={"project": slug, "update": update_id})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


@pytest.mark.parametrize("backend", BACKENDS)
def test_plain_expo_devices_give_active_install_and_failure_figures(
    server_factory: Callable[..., ServerProcess], backend: str, unique: str, tmp_path: Path
) -> None:
    server = server_factory(backend)
    slug = f"plain-{unique}"
    with server.client() as client:
        project = create_project(client, slug)
        first, _ = publish_export(client, slug, make_export(tmp_path / "one", seed=unique))
    x = next(u["id"] for u in first["updates"] if u["platform"] == "ios")

    def ask(device: str, **headers: str) -> str:
        with server.anon() as anon:
            return manifest(
                anon, slug, eas_client_id=device, expo_embedded_update_id=EMBEDDED, **headers
            ).text

    # Three devices on the embedded build are offered X.
    for device in ("a", "b", "c"):
        assert x in ask(device)
    # a and b restart into X; c crashes on X and falls back to the embedded build.
    ask("a", expo_current_update_id=x.upper())  # iOS sends upper-case UUIDs
    ask("b", expo_current_update_id=x)
    ask("c", expo_current_update_id=EMBEDDED, expo_recent_failed_update_ids=f'"{x}"')
    wait_flushed(server, slug, project["id"])

    body = figures(server, slug, x)
    totals = body["totals"]
    assert totals["activeDevices"] == {"1d": 2, "7d": 2, "30d": 2}
    assert (totals["downloads"], totals["installs"]) == (3, 3)
    assert (totals["launchSuccesses"], totals["launchFailures"]) == (2, 1)
    per_update = body["updates"][0]
    assert per_update["activeDevices"] == {"1d": 2, "7d": 2, "30d": 2}

    # A newer update Y: a is offered it and restarts into it, an install of Y; a is now
    # active on Y, no longer on X.
    with server.client() as client:
        second, _ = publish_export(client, slug, make_export(tmp_path / "two", seed=unique + "2"))
    y = next(u["id"] for u in second["updates"] if u["platform"] == "ios")
    assert y in ask("a", expo_current_update_id=x)
    ask("a", expo_current_update_id=y)
    wait_flushed(server, slug, project["id"])
    on_y = figures(server, slug, y)["totals"]
    assert (on_y["installs"], on_y["launchSuccesses"]) == (1, 1)
    assert on_y["activeDevices"]["1d"] == 1
    assert figures(server, slug, x)["totals"]["activeDevices"]["1d"] == 1  # b only
