"""The dashboard in a real browser (Debian's chromium through Playwright) against a real server.

Each test signs in with an API key, drives the UI and saves a screenshot under
test-artifacts/. Skipped (with the reason) when /usr/bin/chromium is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from device_helpers import expo_get
from harness import (
    REPO_ROOT,
    ServerProcess,
    create_project,
    lumora_bin,
    make_export,
    publish_export,
)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Waits are on the page's state, never on time; the ceiling is generous because the suite
# shares a small machine (Playwright's 5 s default made loaded runs fail spuriously).
expect.set_options(timeout=20_000)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text) if msg.type == "error" and "401" not in msg.text else None
        ),
    )
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, errors


def cli_publish(server: ServerProcess, export: Path, project: str, message: str) -> dict[str, Any]:
    """Publish with the real CLI; returns its --json answer."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LUMORA_")},
        "LUMORA_SERVER": server.url,
        "LUMORA_API_KEY": server.admin_key,
        "HOME": str(export.parent),
    }
    proc = subprocess.run(
        [
            lumora_bin(),
            "publish",
            str(export),
            "--project",
            project,
            "--channel",
            "production",
            "--platform",
            "all",
            "--message",
            message,
            "--yes",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer


def sign_in(page: Any, server: ServerProcess, key: str) -> None:
    page.goto(f"{server.url}/dashboard")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("tab", name="Updates").wait_for()


def wait_for(predicate: Any, what: str, timeout: float = 20.0) -> Any:
    """Poll ``predicate`` until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_publish_rollout_rollback(
    page: Any, server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    slug = f"dash-{unique}"
    with server.client() as client:
        create_project(client, slug)
    answer = cli_publish(server, make_export(tmp_path / "export", seed=unique), slug, "first light")
    ios_id = answer["updates"]["ios"]

    sign_in(page, server, server.admin_key)
    page.get_by_label("Project").select_option(label=f"{slug} ({slug})")
    rows = page.locator("#updates-table tbody tr")
    # The table re-renders when the project changes: wait for this project's rows.
    expect(rows).to_have_count(2)
    assert page.locator(f"#updates-table tr[data-update-id='{ios_id}']").is_visible()
    # Filter by platform: only the ios update remains.
    page.get_by_label("Platform").select_option("ios")
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(1)  # polls the DOM (the CSP forbids eval-based waiting)

    # Open the update and change its rollout.
    page.locator(f"#updates-table tr[data-update-id='{ios_id}'] a").click()
    page.locator("#update-facts dd[data-fact='Id']").filter(has_text=ios_id).wait_for()
    expect(page.locator("#manifest-json")).to_contain_text("launchAsset")
    page.get_by_label("Rollout percentage").fill("25")
    page.get_by_role("button", name="Save rollout").click()
    page.locator("#update-facts dd[data-fact='Rollout']").filter(has_text="25%").wait_for()
    with server.client() as client:
        assert client.get(f"/api/v1/updates/{ios_id}").json()["rollout"] == 25

    # Roll it back: cancelling the confirmation changes nothing, confirming rolls back.
    page.get_by_role("button", name="Roll back…").click()
    page.get_by_role("button", name="Cancel").click()
    with server.client() as client:
        assert client.get(f"/api/v1/updates/{ios_id}").json()["status"] == "active"
    page.get_by_role("button", name="Roll back…").click()
    expect(page.locator("#confirm-text")).to_contain_text(ios_id[:8])
    page.get_by_role("button", name="Confirm").click()
    page.locator("#update-facts dd[data-fact='Status']").filter(has_text="rolledBack").wait_for()
    with server.client() as client:
        assert client.get(f"/api/v1/updates/{ios_id}").json()["status"] == "rolledBack"
        audit = client.get("/api/v1/audit", params={"project": slug}).json()["items"]
    assert {"update.patch", "update.rollback"} <= {a["action"] for a in audit}


def test_deployments_rollout_and_promote(
    page: Any, server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    slug = f"dep-{unique}"
    with server.client() as client:
        create_project(client, slug)
    answer = cli_publish(server, make_export(tmp_path / "export", seed=unique), slug, "deploy me")
    android_id = answer["updates"]["android"]

    sign_in(page, server, server.admin_key)
    page.get_by_label("Project").select_option(label=f"{slug} ({slug})")
    page.get_by_role("tab", name="Deployments").click()
    row = page.locator("#deployments-table tr[data-channel='production'][data-platform='android']")
    row.wait_for()
    row.get_by_label("Rollout of production android 1").fill("40")
    row.get_by_role("button", name="Save").click()
    page.locator("#status").filter(has_text="set to 40%").wait_for()
    row.get_by_label("Promote production android to channel").select_option("staging")
    row.get_by_role("button", name="Promote").click()
    expect(page.locator("#confirm-text")).to_contain_text("to staging")
    page.get_by_role("button", name="Confirm").click()
    page.locator(
        "#deployments-table tr[data-channel='staging'][data-platform='android']"
    ).wait_for()
    with server.client() as client:
        assert client.get(f"/api/v1/updates/{android_id}").json()["rollout"] == 40
        staging = client.get(
            "/api/v1/updates", params={"project": slug, "channel": "staging"}
        ).json()["items"]
    assert [u["sourceUpdateId"] for u in staging] == [android_id]


def test_statistics_chart_shows_the_recorded_points(
    page: Any, server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    slug = f"chart-{unique}"
    with server.client() as client:
        create_project(client, slug)
    answer = cli_publish(server, make_export(tmp_path / "export", seed=unique), slug, "charted")
    ios_id = answer["updates"]["ios"]
    events = [
        {
            "deviceId": f"dev-{i}",
            "projectId": slug,
            "events": [{"type": "install", "updateId": ios_id}],
        }
        for i in range(3)
    ] + [
        {
            "deviceId": "dev-x",
            "projectId": slug,
            "events": [{"type": "launch_failure", "updateId": ios_id, "message": "boom"}],
        }
    ]
    for body in events:  # each device is served the update first: only then do reports count
        assert ios_id in expo_get(server, slug, eas_client_id=body["deviceId"]).text
    with server.anon() as anon:
        for body in events:
            assert anon.post("/api/v1/events", json=body).status_code == 202

    def flushed() -> dict[str, Any] | None:
        with server.client() as client:
            totals = client.get("/api/v1/stats", params={"project": slug}).json()["totals"]
        return totals if totals["installs"] == 4 else None

    totals = wait_for(flushed, "the events to be flushed")
    assert totals["downloads"] == 4 and totals["launchFailures"] == 1

    sign_in(page, server, server.admin_key)
    page.get_by_label("Project").select_option(label=f"{slug} ({slug})")
    page.get_by_role("tab", name="Statistics").click()
    page.get_by_label("Range").select_option("7")
    page.get_by_role("button", name="Apply").click()
    points = page.locator("#stats-chart circle[data-series='installs']")
    expect(points).to_have_count(7)
    values = [int(points.nth(i).get_attribute("data-value")) for i in range(7)]
    today = httpx.get(
        f"{server.url}/api/v1/stats",
        params={"project": slug},
        headers={"authorization": f"Bearer {server.admin_key}"},
    ).json()["until"]
    assert points.nth(6).get_attribute("data-date") == today
    assert values == [0, 0, 0, 0, 0, 0, 4]
    failures = page.locator("#stats-chart circle[data-series='launchFailures']")
    assert failures.nth(6).get_attribute("data-value") == "1"
    assert page.locator("#stats-totals [data-total='installs'] strong").inner_text() == "4"
    assert page.locator("#stats-totals [data-total='failureRate'] strong").inner_text() == "100.0%"
    health = page.locator(f"#health-table tr[data-update-id='{ios_id}']")
    assert "not enough launches" in health.inner_text()
    expect(page.locator("#stats-thresholds")).to_contain_text("from at least 10 devices")


def test_sign_in_rejects_bad_key_and_sets_safe_headers(
    page: Any, server: ServerProcess, unique: str
) -> None:
    resp = httpx.get(f"{server.url}/dashboard")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["referrer-policy"] == "no-referrer"
    page.goto(f"{server.url}/dashboard")
    # Keyboard only: the key field has the focus when the sign-in form shows; Enter submits.
    expect(page.get_by_label("API key")).to_be_focused()
    page.keyboard.type("lum_not_a_key")
    page.keyboard.press("Enter")
    page.locator("#login-error").filter(has_text="unknown").wait_for()
    # A read-only key signs in but cannot edit.
    with server.client() as client:
        project = create_project(client, f"ro-{unique}")
        key = client.post(
            "/api/v1/keys", json={"name": "viewer", "role": "read", "project": project["id"]}
        ).json()["key"]
    sign_in(page, server, key)
    cookie = next(c for c in page.context.cookies() if c["name"] == "lumora_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert key not in cookie["value"]
    assert "(read)" in page.locator("#key-info").inner_text()
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API key").wait_for()


def test_paging_keyboard_tabs_and_phone_layout(
    page: Any, server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    slug = f"page-{unique}"
    export = make_export(tmp_path / "export", seed=unique)
    with server.client() as client:
        create_project(client, slug)
        # The project picker lists every project: a long name must not widen the page (the
        # suite's other projects made this test pass or fail with the order tests ran in).
        create_project(client, f"long-{unique}", name="A rather long application name " * 3)
        for i in range(11):  # 22 updates: more than one page of 20
            publish_export(client, slug, export, message=f"release {i}")
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, server, server.admin_key)
    page.get_by_label("Project").select_option(label=f"{slug} ({slug})")
    rows = page.locator("#updates-table tbody tr")
    expect(rows).to_have_count(20)
    expect(rows.first).to_contain_text("release 10")
    page.get_by_role("button", name="Next page").click()
    expect(rows).to_have_count(2)
    expect(page.locator("#page-info")).to_have_text("Page 2")
    expect(page.get_by_role("button", name="Next page")).to_be_disabled()
    page.get_by_role("button", name="Previous page").click()
    expect(rows).to_have_count(20)
    # Tabs follow the arrow keys.
    page.get_by_role("tab", name="Updates").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Deployments")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#deployments-table tr[data-channel='production']")).to_have_count(2)
    # On a phone-sized screen the page itself never scrolls sideways (tables scroll inside).
    page_width = "() => document.documentElement.scrollWidth"
    assert page.evaluate(page_width) <= 390
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Statistics")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#stats-chart svg")).to_have_count(1)
    assert page.evaluate(page_width) <= 390


def test_update_page_renders_once_when_loads_overlap(
    page: Any, server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    """Two loads of one update in flight at once (a hash change while the first still
    renders, the refresh timer, a save) draw the page once: the stale load draws nothing.

    The delta answers are held by the test, so the interleaving that made the page show its
    facts twice is forced on every run instead of on a lucky one."""
    slug = f"race-{unique}"
    with server.client() as client:
        create_project(client, slug)
        answer, _ = publish_export(client, slug, make_export(tmp_path / "export", seed=unique))
    update_id = next(u["id"] for u in answer["updates"] if u["platform"] == "ios")
    held: list[Any] = []
    page.route("**/api/v1/updates/*/delta", lambda route: held.append(route))

    def wait_held(n: int) -> None:
        while len(held) < n:  # route handlers run while Playwright waits
            page.wait_for_timeout(20)

    sign_in(page, server, server.admin_key)
    page.goto(f"{server.url}/dashboard#/updates/{update_id}")
    wait_held(1)
    # A second load of the same update starts while the first waits for its delta answer.
    page.goto(f"{server.url}/dashboard#/updates/{update_id}/")
    wait_held(2)
    manifests = page.locator("#manifest-json")
    # The stale load finishes first (the old page drew its facts here, then fetched the
    # manifest), the fresh one after.
    held[0].continue_()
    held[1].continue_()
    page.locator("#update-totals [data-total='checks']").wait_for()
    expect(manifests).to_contain_text("launchAsset")
    facts = page.locator("#update-facts")
    expect(facts.locator("dd[data-fact='Id']")).to_have_count(1)
    expect(facts.locator("dd")).to_have_count(facts.locator("dt").count())
    expect(facts.locator("dd[data-fact='Bundle download']")).to_have_count(1)
    expect(page.locator("#assets-table tbody tr")).to_have_count(
        len(next(u for u in answer["updates"] if u["platform"] == "ios")["assets"]) + 1
    )


# ---------------------------------------------------------------- issue 17: operator experience

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def shoot(page: Any, name: str) -> None:
    """Screenshots at desktop and phone widths (test-artifacts/), looked at by people."""
    ARTIFACTS.mkdir(exist_ok=True)
    before = page.viewport_size
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.screenshot(path=str(ARTIFACTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(before)


def test_signed_out_page_shows_no_project_picker_or_sign_out(
    page: Any, server: ServerProcess
) -> None:
    page.goto(f"{server.url}/dashboard")
    page.get_by_label("API key").wait_for()
    expect(page.locator("#session-bar")).to_be_hidden()
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    expect(page.locator("#project-select")).to_be_hidden()
    shoot(page, "signed-out")
    sign_in(page, server, server.admin_key)
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API key").wait_for()
    expect(page.locator("#project-select")).to_be_hidden()


def test_promote_asks_first_and_has_no_default_channel(
    page: Any, server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    slug = f"prom-{unique}"
    with server.client() as client:
        create_project(client, slug)
        answer, _ = publish_export(client, slug, make_export(tmp_path / "e", seed=unique))
    ios_id = next(u["id"] for u in answer["updates"] if u["platform"] == "ios")
    sign_in(page, server, server.admin_key)
    page.goto(f"{server.url}/dashboard#/updates/{ios_id}")
    page.locator("#update-facts dd[data-fact='Id']").filter(has_text=ios_id).wait_for()
    select = page.get_by_label("Promote to channel")
    expect(select).to_have_value("")  # not "development", the alphabetically first
    page.get_by_role("button", name="Promote").click()  # no channel chosen: nothing happens
    expect(page.locator("#confirm-dialog")).to_be_hidden()
    select.select_option("staging")
    page.get_by_role("button", name="Promote").click()
    expect(page.locator("#confirm-text")).to_contain_text("to staging")
    shoot(page, "promote-confirm")
    page.get_by_role("button", name="Cancel").click()
    with server.client() as client:
        staging = client.get("/api/v1/updates", params={"project": slug, "channel": "staging"})
        assert staging.json()["items"] == []
    page.get_by_role("button", name="Promote").click()
    page.get_by_role("button", name="Confirm").click()

    def promoted() -> list[Any] | None:
        with server.client() as client:
            items = client.get(
                "/api/v1/updates", params={"project": slug, "channel": "staging"}
            ).json()["items"]
        return [u["sourceUpdateId"] for u in items] or None

    assert wait_for(promoted, "the promoted copy") == [ios_id]


def test_phone_chart_shows_today_and_dashboard_opens_the_last_used_project(
    browser: Any, server: ServerProcess, unique: str
) -> None:
    first, last = f"aaa-first-{unique}", f"zzz-last-{unique}"
    with server.client() as client:
        create_project(client, first)
        create_project(client, last)
    context = browser.new_context(viewport=PHONE)
    try:
        page = context.new_page()
        sign_in(page, server, server.admin_key)
        page.get_by_label("Project").select_option(label=f"{last} ({last})")
        page.get_by_role("tab", name="Statistics").click()
        today = page.locator("#stats-chart circle[data-series='installs']").last
        today.wait_for(state="attached")
        # Scroll the page (only vertically: the chart's own sideways scroll is under test).
        to_chart = (
            "() => scrollTo(0, document.getElementById('stats-chart')"
            ".getBoundingClientRect().top + scrollY - 20)"
        )
        page.evaluate(to_chart)
        # Today's point is on screen, not scrolled away inside the chart's box...
        expect(today).to_be_in_viewport()
        shoot(page, "stats-chart")
        page.evaluate(to_chart)
        # ...and comes back after the window was wide and narrow again (a phone turned).
        expect(today).to_be_in_viewport()
        expect(page.locator("#stats-chart .legend")).to_be_in_viewport(ratio=1)
        # A new tab (or a later visit) opens on the project used last, not the first one.
        again = context.new_page()
        again.goto(f"{server.url}/dashboard")
        project = next(p for p in server.client().get("/api/v1/projects").json()["items"]
                       if p["slug"] == last)  # fmt: skip
        expect(again.locator("#project-select")).to_have_value(project["id"])
    finally:
        context.close()


def test_groups_channel_split_and_pause(
    page: Any, server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    slug = f"chan-{unique}"
    with server.client() as client:
        create_project(client, slug)
        old, _ = publish_export(client, slug, make_export(tmp_path / "a", seed="a" + unique))
        new, _ = publish_export(client, slug, make_export(tmp_path / "b", seed="b" + unique))
    old_ids = {u["platform"]: u["id"] for u in old["updates"]}
    new_ids = {u["platform"]: u["id"] for u in new["updates"]}
    sign_in(page, server, server.admin_key)
    page.get_by_label("Project").select_option(label=f"{slug} ({slug})")

    # Groups: the list shows them, and a rollout can be set for the whole group.
    row = page.locator(f"#updates-table tr[data-update-id='{new_ids['ios']}']")
    expect(row).to_have_attribute("data-group-id", new["groupId"])
    row.locator("a").click()
    page.locator("#update-facts dd[data-fact='Same group']").filter(
        has_text=new_ids["android"][:8]
    ).wait_for()
    expect(page.get_by_label("Whole group (android, ios)")).to_be_checked()
    page.get_by_label("Rollout percentage").fill("0")  # what an auto-pause does
    page.get_by_role("button", name="Save rollout").click()
    # Redrawn from the server's answer: this update and its sibling are both at 0 %.
    expect(page.locator("#update-facts dd[data-fact='Rollout']")).to_have_text("0%")
    page.locator("#update-facts dd[data-fact='Same group']").filter(has_text="(0%)").wait_for()
    with server.client() as client:
        rollouts = [client.get(f"/api/v1/updates/{i}").json()["rollout"] for i in new_ids.values()]
    assert rollouts == [0, 0]

    # The channel view says where devices really go: 0 % on the new one, 100 % on the old.
    page.get_by_role("tab", name="Deployments").click()
    ios_row = page.locator("#deployments-table tr[data-channel='production'][data-platform='ios']")
    split = ios_row.locator("td.split")
    expect(split.locator(f"li[data-update-id='{old_ids['ios']}']")).to_contain_text("100%")
    expect(split.locator(f"li[data-update-id='{new_ids['ios']}']")).to_contain_text("0%")
    shoot(page, "channel-split")

    # Pause the channel (confirmed), then resume it.
    state = page.locator("#channel-states li[data-channel='production']")
    state.get_by_role("button", name="Pause…").click()
    expect(page.locator("#confirm-text")).to_contain_text("Pause channel production")
    page.get_by_role("button", name="Confirm").click()
    expect(state).to_have_attribute("data-paused", "true")
    expect(split).to_contain_text("Paused: no update")
    shoot(page, "channel-paused")
    with server.client() as client:
        channels = client.get("/api/v1/deployments", params={"project": slug}).json()["items"]
    assert {c["name"]: c["paused"] for c in channels}["production"] is True
    state.get_by_role("button", name="Resume…").click()
    page.get_by_role("button", name="Confirm").click()
    expect(state).to_have_attribute("data-paused", "false")
