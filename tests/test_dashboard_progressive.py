"""The dashboard's issue-19 views in a real browser: an update's rollout plan (step, next
step, gate figures), pinned devices and webhook deliveries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from harness import ServerProcess, create_project, make_export, publish_export
from test_dashboard_browser import CHROMIUM, browser, page, shoot, sign_in  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed"),
]


def test_plan_pins_and_deliveries(
    page: Any,  # noqa: F811
    server: ServerProcess,
    unique: str,
    tmp_path: Path,
) -> None:
    slug = f"prog-{unique}"
    with server.client() as client:
        create_project(client, slug)
        answer, _ = publish_export(client, slug, make_export(tmp_path / "a", seed=unique))
        ios = next(u["id"] for u in answer["updates"] if u["platform"] == "ios")
        plan = {"steps": [5, 25, 100], "stepSeconds": 3600, "minLaunches": 50}
        assert client.put(f"/api/v1/updates/{ios}/rollout-plan", json=plan).status_code == 200
        pin = {"channel": "production"}
        assert client.put(f"/api/v1/projects/{slug}/devices/qa-phone", json=pin).status_code == 200
        hook = {"url": "https://93.184.215.14/hook", "events": ["update.rollout_changed"]}
        resp = client.post(f"/api/v1/projects/{slug}/webhooks", json=hook)
        assert resp.status_code == 201
        hook_id = resp.json()["id"]
        # An event after the webhook exists: one delivery (it cannot reach that address
        # from here, so it shows as pending with its error once tried).
        resp = client.put(f"/api/v1/updates/{ios}/rollout-plan", json={**plan, "steps": [10, 100]})
        assert resp.status_code == 200
    sign_in(page, server, server.admin_key)
    page.get_by_label("Project").select_option(label=f"{slug} ({slug})")
    page.goto(f"{server.url}/dashboard#/updates/{ios}")
    facts = page.locator("#update-facts")
    expect(facts.locator("dd[data-fact='Rollout plan']")).to_contain_text("active: step 1 of 2")
    expect(facts.locator("dd[data-fact='Next step']")).to_contain_text("100% after")
    expect(facts.locator("dd[data-fact='Plan gate']")).to_contain_text("at least 50 launches")
    shoot(page, "rollout-plan")
    page.get_by_role("tab", name="Devices & webhooks").click()
    expect(page.locator("#pins-table tbody tr")).to_have_count(1)
    expect(page.locator("#pins-table tbody")).to_contain_text("qa-phone")
    expect(page.locator("#deliveries-table tbody")).to_contain_text("update.rollout_changed")
    shoot(page, "pins-and-deliveries")
    with server.client() as client:  # the shared server stops retrying that address
        assert client.delete(f"/api/v1/projects/{slug}/webhooks/{hook_id}").status_code == 200
