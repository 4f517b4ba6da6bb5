"""``lumora publish --rollout-plan``, ``lumora updates plan|resume`` and ``lumora webhooks``
against a real server."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from lumora_ota.cli.errors import CliError
from lumora_ota.cli.plans import parse_duration, parse_rate, parse_steps
from test_cli_e2e import Cli, cli, project  # noqa: F401 - fixtures


def test_parsers() -> None:
    assert parse_steps("1,10, 50%,100") == [1, 10, 50, 100]
    assert [parse_duration(d) for d in ("90", "90s", "30m", "1h", "2d", "1.5h")] == [
        90, 90, 1800, 3600, 172800, 5400,
    ]  # fmt: skip
    assert parse_rate("2%") == pytest.approx(0.02) and parse_rate("0.5") == 0.5
    for bad in (lambda: parse_steps("a,b"), lambda: parse_duration("soon"),
                lambda: parse_rate("200%"), lambda: parse_rate("x")):  # fmt: skip
        with pytest.raises(CliError):
            bad()


def test_publish_with_a_plan_then_show_clear_and_resume(
    cli: Cli,  # noqa: F811
    project: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text(f"print({uuid.uuid4().hex!r})\n")
    published = cli.json(
        "publish", str(app), "--project", project, "--launch-asset", "main.py",
        "--runtime-version", "1", "--platform", "ios", "--yes",
        "--rollout-plan", "5,50,100", "--step", "1h", "--max-failure-rate", "2%",
    )  # fmt: skip
    group = published["groupId"]
    ios = published["updates"]["ios"]
    plans = published["rolloutPlans"]
    assert [(p["updateId"], p["rollout"], p["steps"]) for p in plans] == [(ios, 5, [5, 50, 100])]
    assert plans[0]["stepSeconds"] == 3600 and plans[0]["maxFailureRate"] == pytest.approx(0.02)
    assert cli.json("updates", "view", ios)["rollout"] == 5
    shown = cli.json("updates", "plan", group)["items"]
    assert shown[0]["nextStep"] == 50 and shown[0]["status"] == "active"
    table = cli.ok("updates", "plan", ios)
    assert "active" in table and "5%" in table
    # Setting, clearing and resuming a plan change what devices get: --yes off a terminal.
    for change in (("plan", ios, "--steps", "10,100"), ("plan", ios, "--clear"),
                   ("resume", ios)):  # fmt: skip
        assert "--yes" in cli.fails("updates", *change, code=1)
    assert cli.json("updates", "view", ios)["rollout"] == 5
    changed = cli.json(
        "updates", "plan", ios, "--steps", "10,100", "--step", "30m", "--min-launches", "50",
        "--yes",
    )["items"][0]  # fmt: skip
    assert (changed["rollout"], changed["minLaunches"], changed["stepSeconds"]) == (10, 50, 1800)
    assert "no halted rollout plan" in cli.fails("updates", "resume", ios, "--yes")
    assert cli.json("updates", "plan", ios, "--clear", "--yes") == {"cleared": [ios]}
    assert "has no rollout plan" in cli.run("updates", "plan", ios).stderr
    assert cli.fails("updates", "plan", ios, "--steps", "50,10", "--yes").startswith("error:")
    cli.fails("publish", str(app), "--project", project, "--launch-asset", "main.py",
              "--yes", "--rollout-plan", "1,x", code=2)  # fmt: skip


def test_webhooks_commands(cli: Cli, project: str) -> None:  # noqa: F811
    created = cli.json(
        "webhooks", "create", "https://93.184.215.14/hook", "--project", project,
        "-e", "update.published,channel.paused",
    )  # fmt: skip
    assert created["secret"].startswith("whsec_")
    assert created["events"] == ["update.published", "channel.paused"]
    listed = cli.json("webhooks", "list", "--project", project)["items"]
    assert [h["id"] for h in listed] == [created["id"]] and "secret" not in listed[0]
    assert "93.184.215.14" in cli.ok("webhooks", "list", "--project", project)
    assert cli.json("webhooks", "deliveries", created["id"], "--project", project) == {"items": []}
    refused = cli.fails("webhooks", "create", "http://127.0.0.1/x", "--project", project)
    assert "private" in refused or "loopback" in refused
    cli.fails("webhooks", "create", "https://93.184.215.14/", "-e", "nope", "--project", project)
    cli.ok("webhooks", "delete", created["id"], "--project", project)
    assert cli.json("webhooks", "list", "--project", project) == {"items": []}
    cli.fails("webhooks", "delete", created["id"], "--project", project)


def test_devices_commands(cli: Cli, project: str, tmp_path: Path) -> None:  # noqa: F811
    pinned = cli.json("devices", "pin", "qa-1", "--channel", "staging", "--project", project)
    assert pinned["channel"] == "staging"
    assert [p["deviceId"] for p in cli.json("devices", "list", "--project", project)["items"]] == [
        "qa-1"
    ]
    view = cli.json("devices", "view", "qa-1", "--project", project)
    assert view["pin"]["channel"] == "staging" and view["timeline"] == []
    assert "staging" in cli.ok("devices", "view", "qa-1", "--project", project)
    cli.fails("devices", "pin", "qa-2", "--channel", "nope", "--project", project)
    cli.ok("devices", "unpin", "qa-1", "--project", project)
    cli.fails("devices", "view", "qa-1", "--project", project)
