"""Operator experience of the ``lumora`` CLI (issue 17), run as a subprocess against a real
server: confirmations off a terminal, update groups, pause/resume, delete, channel views and
tables that stay readable in a pipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import ServerProcess, make_export
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
    assert cli.json("updates", "rollback", ios, "--yes", "--non-interactive")["id"] == ios
    assert cli.json("updates", "view", ios)["status"] == "rolledBack"
    cli.json("keys", "revoke", key["id"], "--yes")
    assert "rejected" in cli.fails("whoami", env={"LUMORA_API_KEY": key["key"]})
