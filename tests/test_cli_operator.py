"""Operator experience of the ``lumora`` CLI (issue 17), run as a subprocess against a real
server: confirmations off a terminal, update groups, pause/resume, delete, channel views and
tables that stay readable in a pipe."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import lumora_ota
from device_helpers import expo_get, parse_multipart
from harness import ServerProcess, lumora_bin, make_export
from test_cli_e2e import Cli, _base_env


@pytest.fixture
def cli(server: ServerProcess, tmp_path: Path) -> Cli:
    """The CLI pointed at the shared server with its admin key (stdin is /dev/null)."""
    env = _base_env(tmp_path)
    env.update(LUMORA_SERVER=server.url, LUMORA_API_KEY=server.admin_key)
    return Cli(env, tmp_path)


@pytest.fixture
def project(cli: Cli, unique: str) -> str:
    """A fresh project made through the CLI; its slug."""
    created = cli.json("projects", "create", f"Operator {unique}", "--slug", f"op-{unique}")
    return str(created["slug"])


def publish(cli: Cli, project: str, export: Path, *extra: str) -> dict[str, Any]:
    """``lumora publish --yes --json``: the answer (``groupId``, ``updates`` by platform)."""
    answer: dict[str, Any] = cli.json(
        "publish", str(export), "--project", project, "--platform", "all", "--yes", *extra
    )
    return answer


def updates_of(server: ServerProcess, project: str, **filters: str) -> list[dict[str, Any]]:
    with server.client() as http:
        items: list[dict[str, Any]] = http.get(
            "/api/v1/updates", params={"project": project, **filters}
        ).json()["items"]
    return items


# ---------------------------------------------------------------- 1: safety off a terminal


def test_production_changing_commands_refuse_without_yes_off_a_terminal(
    cli: Cli, project: str, server: ServerProcess, tmp_path: Path
) -> None:
    export = make_export(tmp_path / "export", seed=project)
    # stdin is /dev/null (CI, a script): nothing can confirm, so nothing is published.
    refused = cli.fails("publish", str(export), "--project", project, "--platform", "all")
    assert "refused without --yes" in refused and "no terminal" in refused
    assert updates_of(server, project) == []

    published = publish(cli, project, export, "-m", "first")
    ios = published["updates"]["ios"]
    refused = cli.fails("updates", "rollback", ios)
    assert "refused without --yes" in refused
    assert "refused without --yes" in cli.fails("updates", "edit", ios, "--rollout", "5")
    assert cli.json("updates", "view", ios)["rollout"] == 100
    assert cli.json("updates", "view", ios)["status"] == "active"

    key = cli.json("keys", "create", "--name", "ci", "--role", "read", "--project", project)
    assert "refused without --yes" in cli.fails("keys", "revoke", key["id"])
    assert cli.json("whoami", env={"LUMORA_API_KEY": key["key"]})["keyId"] == key["id"]

    # --non-interactive, as in EAS: on the command, before it, or from the environment.
    for args, env in (
        (["updates", "rollback", ios, "--non-interactive"], None),
        (["--non-interactive", "updates", "rollback", ios], None),
        (["updates", "rollback", ios], {"LUMORA_NON_INTERACTIVE": "1"}),
    ):
        assert "--non-interactive is set" in cli.fails(*args, env=env)
    assert cli.json("updates", "view", ios)["status"] == "active"

    # --yes goes ahead.
    cli.json("updates", "rollback", ios, "--yes", "--non-interactive")
    assert cli.json("updates", "view", ios)["status"] == "rolledBack"
    cli.json("keys", "revoke", key["id"], "--yes")
    assert "rejected" in cli.fails("whoami", env={"LUMORA_API_KEY": key["key"]})


def served(server: ServerProcess, project: str, platform: str, channel: str = "production") -> Any:
    """The update id an expo-updates device of ``channel`` gets now, None for no update."""
    resp = expo_get(server, project, platform=platform, expo_channel_name=channel)
    if resp.status_code == 204:
        return None
    parts = parse_multipart(resp)
    if "manifest" not in parts:
        return None
    return json.loads(parts["manifest"].body)["id"]


def wait_served(
    server: ServerProcess, project: str, platform: str, expected: Any, channel: str = "production"
) -> None:
    """Devices see management writes once the delivery cache reloads (revision bump)."""
    for _ in range(100):
        if served(server, project, platform, channel) == expected:
            return
        time.sleep(0.1)
    assert served(server, project, platform, channel) == expected


# ---------------------------------------------------------------- 2: update groups


def test_every_updates_command_takes_a_group_id(
    cli: Cli, project: str, server: ServerProcess, tmp_path: Path
) -> None:
    published = publish(cli, project, make_export(tmp_path / "a", seed=project), "--rollout", "20")
    group, ios, android = published["groupId"], *published["updates"].values()

    shown = cli.json("updates", "view", group)
    assert shown["id"] == group and {u["id"] for u in shown["updates"]} == {ios, android}
    assert group in cli.ok("updates", "view", group)
    # The single update id still shows one update, in the shape it always had.
    assert cli.json("updates", "view", ios)["id"] == ios

    # A group id acts on every platform; a platform's id on that one only.
    edited = cli.json("updates", "edit", group, "--rollout", "50", "--yes")
    assert [u["rollout"] for u in edited["updates"]] == [50, 50]
    cli.json("updates", "edit", ios, "--rollout", "60", "--yes")
    rollouts = {u["platform"]: u["rollout"] for u in updates_of(server, project)}
    assert rollouts == {"ios": 60, "android": 50}

    promoted = cli.json(
        "updates", "promote", group, "--to-channel", "staging", "--rollout", "10",
        "--mandatory", "--message", "to staging", "--yes",
    )  # fmt: skip
    assert sorted(p["platform"] for p in promoted) == ["android", "ios"]
    assert {(p["channel"], p["rollout"], p["mandatory"], p["message"]) for p in promoted} == {
        ("staging", 10, True, "to staging")
    }
    assert "refused without --yes" in cli.fails("updates", "promote", group, "--to-channel", "x")

    rolled = cli.json("updates", "rollback", group, "--yes")
    assert sorted(r["platform"] for r in rolled) == ["android", "ios"]  # one result each
    assert {cli.json("updates", "view", i)["status"] for i in (ios, android)} == {"rolledBack"}
    # A group with a rolled-back update is not half promoted.
    assert "rolled back" in cli.fails("updates", "promote", group, "--to-channel", "qa", "--yes")
    assert updates_of(server, project, channel="qa") == []
    # Production holds the rolled-back pair and what replaced it for their devices (the
    # only publish had nothing before it: a roll-back-to-embedded marker per platform), and
    # nothing else: the refused promote changed nothing there either.
    replaced = {r["replacement"]["id"] for r in rolled if r.get("replacement")}
    assert len(replaced) == 2
    production = {u["id"]: u for u in updates_of(server, project, channel="production")}
    assert set(production) == {ios, android} | replaced
    assert {production[i]["status"] for i in (ios, android)} == {"rolledBack"}
    assert {production[i]["kind"] for i in replaced} == {"rollbackToEmbedded"}
    assert "no update or update group" in cli.fails("updates", "view", str(uuid.uuid4()))


# ---------------------------------------------------------------- 3: missing commands


def test_delete_a_group_or_one_update_moves_devices_back(
    cli: Cli, project: str, server: ServerProcess, tmp_path: Path
) -> None:
    first = publish(cli, project, make_export(tmp_path / "a", seed="a" + project), "-m", "a")
    second = publish(cli, project, make_export(tmp_path / "b", seed="b" + project), "-m", "b")
    wait_served(server, project, "ios", second["updates"]["ios"])

    assert "refused without --yes" in cli.fails("updates", "delete", second["groupId"])
    deleted = cli.json("updates", "delete", second["groupId"], "--yes")
    assert sorted(deleted["deleted"]) == sorted(second["updateIds"])
    # Devices move to what remains eligible, at once (the delivery cache reloads).
    wait_served(server, project, "ios", first["updates"]["ios"])
    wait_served(server, project, "android", first["updates"]["android"])
    assert "no update or update group" in cli.fails("updates", "view", second["groupId"])

    # One platform's update only.
    cli.json("updates", "delete", first["updates"]["android"], "--yes")
    wait_served(server, project, "android", None)
    assert served(server, project, "ios") == first["updates"]["ios"]
    assert [u["id"] for u in updates_of(server, project)] == [first["updates"]["ios"]]
    with server.client() as http:
        audit = http.get("/api/v1/audit", params={"project": project}).json()["items"]
    assert sum(a["action"] == "update.delete" for a in audit) == 3


def test_version() -> None:
    done = subprocess.run(
        [lumora_bin(), "--version"], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == f"lumora {lumora_ota.__version__}"


def test_pause_resume_view_audit_and_auto_pause(
    cli: Cli, project: str, server: ServerProcess, tmp_path: Path
) -> None:
    first = publish(cli, project, make_export(tmp_path / "a", seed="a" + project), "-m", "a")
    ios = first["updates"]["ios"]
    wait_served(server, project, "ios", ios)

    assert "refused without --yes" in cli.fails("deployments", "pause", "production", "-p", project)
    paused = cli.json("deployments", "pause", "production", "-p", project, "--yes")
    assert paused["paused"] is True
    wait_served(server, project, "ios", None)  # a paused channel serves no update
    view = cli.json("deployments", "view", "production", "-p", project)
    assert view["paused"] is True
    assert {e["platform"]: e["split"] for e in view["serving"]}["ios"] == [
        {"share": 100, "update": None}
    ]
    assert "PAUSED" in cli.ok("deployments", "view", "production", "-p", project)
    assert "paused" in cli.ok("deployments", "list", "-p", project)
    # Other channels are not affected.
    cli.json("updates", "promote", ios, "--to-channel", "staging", "--yes")
    wait_served(server, project, "ios", cli.json("deployments", "view", "staging", "-p", project)[
        "serving"][0]["split"][0]["update"]["id"], channel="staging")  # fmt: skip

    cli.json("deployments", "resume", "production", "-p", project, "--yes")
    wait_served(server, project, "ios", ios)

    # The audit log and the auto-pause switch, from the CLI.
    actions = [e["action"] for e in cli.json("audit", "-p", project)]
    assert {"deployment.pause", "deployment.resume", "update.promote"} <= set(actions)
    only = cli.json("audit", "-p", project, "--action", "deployment.")
    assert [e["action"] for e in only] == ["deployment.resume", "deployment.pause"]
    assert "deployment.pause" in cli.ok("audit", "-p", project)
    assert cli.json("projects", "edit", project, "--auto-pause")["autoPauseOnFailure"] is True
    assert cli.json("projects", "view", project)["autoPauseOnFailure"] is True
    assert cli.json("projects", "edit", project, "--no-auto-pause")["autoPauseOnFailure"] is False


def test_updates_list_says_when_more_match(
    cli: Cli, project: str, server: ServerProcess, tmp_path: Path
) -> None:
    export = make_export(tmp_path / "a", seed=project)
    for i in range(3):
        publish(cli, project, export, "-m", f"release {i}")  # 6 updates
    done = cli.run("updates", "list", "-p", project, "--limit", "4", "--json")
    assert done.returncode == 0
    assert len(json.loads(done.stdout)) == 4  # --json: the same plain list as ever
    assert "--cursor" in done.stderr
    cursor = done.stderr.split("--cursor ", 1)[1].split()[0]
    rest = cli.json("updates", "list", "-p", project, "--cursor", cursor)
    assert len(rest) == 2 and rest[-1]["message"] == "release 0"
    last = cli.run("updates", "list", "-p", project, "--cursor", cursor, "--json")
    assert "--cursor" not in last.stderr


# ---------------------------------------------------------------- 4: what devices get


def test_channel_view_shows_the_rollout_split_after_an_auto_pause(
    cli: Cli, project: str, server: ServerProcess, tmp_path: Path
) -> None:
    first = publish(cli, project, make_export(tmp_path / "a", seed="a" + project), "-m", "a")
    second = publish(cli, project, make_export(tmp_path / "b", seed="b" + project), "-m", "b")
    # What an auto-pause does: the newest update's rollout goes to 0.
    cli.json("updates", "edit", second["updates"]["ios"], "--rollout", "0", "--yes")
    cli.json("updates", "edit", second["updates"]["android"], "--rollout", "30", "--yes")
    view = cli.json("deployments", "view", "production", "-p", project)
    split = {
        e["platform"]: [(s["share"], (s["update"] or {}).get("id")) for s in e["split"]]
        for e in view["serving"]
    }
    assert split["ios"] == [(0, second["updates"]["ios"]), (100, first["updates"]["ios"])]
    assert split["android"] == [
        (30, second["updates"]["android"]),
        (70, first["updates"]["android"]),
    ]
    # And that is what an ios device gets.
    wait_served(server, project, "ios", first["updates"]["ios"])
    human = cli.ok("deployments", "view", "production", "-p", project)
    assert first["updates"]["ios"] in human and "100%" in human and "0%" in human
    listed = cli.ok("deployments", "list", "-p", project)
    assert f"100% {first['updates']['ios'][:8]}" in listed


# ---------------------------------------------------------------- 5: tables in a pipe


def test_tables_are_readable_at_80_columns_in_a_pipe(
    cli: Cli, project: str, server: ServerProcess, tmp_path: Path
) -> None:
    published = publish(
        cli, project, make_export(tmp_path / "a", seed=project), "-m", "production hotfix"
    )
    narrow = {"COLUMNS": "80"}
    for args in (
        ["updates", "list", "-p", project],
        ["updates", "view", published["groupId"]],
        ["deployments", "list", "-p", project],
        ["deployments", "view", "production", "-p", project],
        ["audit", "-p", project],
    ):
        out = cli.ok(*args, env=narrow)
        assert all(len(line) <= 80 for line in out.splitlines()), (args, out)
        for update_id in published["updateIds"]:
            if update_id in cli.ok(*args):  # wide: the ids it shows...
                assert update_id in out, (args, out)  # ...stay whole at 80 columns
    listed = cli.ok("updates", "list", "-p", project, env=narrow)
    assert "production hotfix" in listed and "production" in listed.split()
    assert published["groupId"] in listed
    assert cli.json("updates", "list", "-p", project, env=narrow) == cli.json(
        "updates", "list", "-p", project
    )


# ---------------------------------------------------------------- 6: renaming a channel


def test_renaming_a_channel_warns_and_asks(cli: Cli, project: str, server: ServerProcess) -> None:
    done = cli.run("deployments", "edit", "staging", "--name", "beta", "-p", project)
    assert done.returncode != 0
    assert "devices ask for a channel by name" in done.stderr
    assert "refused without --yes" in done.stderr
    names = cli.json("projects", "view", project)["channels"]
    assert "staging" in names and "beta" not in names
    done = cli.run("deployments", "edit", "staging", "--name", "beta", "-p", project, "--yes")
    assert done.returncode == 0 and "devices ask for a channel by name" in done.stderr
    assert "beta" in cli.json("projects", "view", project)["channels"]
