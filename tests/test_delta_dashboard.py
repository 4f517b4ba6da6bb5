"""The dashboard's update page shows the bundle's download sizes, its patches and the bytes
saved (Debian's chromium through Playwright; skipped when it is absent)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from delta_helpers import (
    NEW_EXPORT,
    OLD_EXPORT,
    get_launch_asset,
    updates_by_platform,
    wait_for_patch,
)
from harness import ServerProcess, create_project, publish_export

CHROMIUM = Path("/usr/bin/chromium")

# Waits are on the page's state, never on time; the ceiling is generous because the suite
# shares a small machine (Playwright's 5 s default made loaded runs fail spuriously).
expect.set_options(timeout=20_000)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed"),
]


@pytest.fixture
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page
        browser.close()
        assert not errors, errors


def test_update_page_shows_patches_and_savings(
    page: Any, server: ServerProcess, fixtures_dir: Path
) -> None:
    slug = f"delta-dash-{uuid.uuid4().hex[:8]}"
    with server.client() as client:
        create_project(client, slug)
        old, _ = publish_export(client, slug, fixtures_dir / OLD_EXPORT, runtime_version="1")
        new, _ = publish_export(client, slug, fixtures_dir / NEW_EXPORT, runtime_version="1")
        old_id = updates_by_platform(old)["android"]["id"]
        update = updates_by_platform(new)["android"]
        wait_for_patch(client, update["id"], old_id)
    assert get_launch_asset(server, update, current=old_id).status_code == 226

    page.goto(f"{server.url}/dashboard")
    page.get_by_label("API key").fill(server.admin_key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("tab", name="Updates").wait_for()
    page.goto(f"{server.url}/dashboard#/updates/{update['id']}")
    facts = page.locator("#update-facts")
    # The page was signed in on one view and then sent to this one: two loads overlap, and
    # the facts are drawn once (the stale load draws nothing).
    expect(facts.locator("dd[data-fact='Id']")).to_have_text(update["id"])
    expect(facts.locator("dd[data-fact='Bundle download']")).to_have_count(1)
    expect(facts.locator("dd[data-fact='Bundle download']")).to_contain_text("br ")
    expect(facts.locator("dd[data-fact='Patches']")).to_contain_text("KiB")
    expect(facts.locator("dd[data-fact='Saved by patches']")).to_contain_text("patch downloads")
