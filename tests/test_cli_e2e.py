"""The real ``lumora`` CLI, run as a subprocess against a real server process."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import ServerProcess, free_port, lumora_bin

FIXTURE_NEW = "expo-export-1674170951"
FIXTURE_OLD = "expo-export-1666629107"
NEW_IOS_BUNDLE_HASH = "4nGjshgRoD62YxnJAnZBWllEzCBrQR2zQ_2ei8glL6s"
PNG_HASH = "JCcs2u_4LMX6zazNmCpvBbYMRQRwS7-UwZpjiGWYgLs"


@dataclass
class Cli:
    """Runs ``lumora`` with an isolated config dir and the given environment."""

    env: dict[str, str]
    cwd: Path
    calls: list[list[str]] = field(default_factory=list)

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(args))
        return subprocess.run(
            [lumora_bin(), *args],
            env={**self.env, **(env or {})},
            cwd=self.cwd,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = self.run(*args, env=env)
        assert done.returncode == 0, f"lumora {' '.join(args)} failed: {done.stderr}"
        assert "Traceback" not in done.stderr
        return done.stdout

    def json(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", env=env))

    def fails(self, *args: str, env: dict[str, str] | None = None, code: int | None = None) -> str:
        """Asserts a non-zero exit with exactly one ``error:`` line on stderr; returns it."""
        done = self.run(*args, env=env)
        assert done.returncode != 0, f"lumora {' '.join(args)} should fail: {done.stdout}"
        if code is not None:
            assert done.returncode == code, done.stderr
        assert "Traceback" not in done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: "), done.stderr
        return lines[0]


def _base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMORA_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    env["COLUMNS"] = "200"
    return env


@pytest.fixture
def cli(server: ServerProcess, tmp_path: Path) -> Cli:
    """The CLI pointed at the shared server with its admin key."""
    env = _base_env(tmp_path)
    env.update(LUMORA_SERVER=server.url, LUMORA_API_KEY=server.admin_key)
    return Cli(env, tmp_path)


@pytest.fixture
def project(cli: Cli, unique: str) -> str:
    """A fresh project made through the CLI; its slug."""
    created = cli.json("projects", "create", f"CLI test {unique}", "--slug", f"cli-{unique}")
    assert created["slug"] == f"cli-{unique}" and created["id"]
    return str(created["slug"])


def test_publish_fixtures_and_manage_updates(
    cli: Cli, project: str, fixtures_dir: Path, server: ServerProcess
) -> None:
    common = ["--project", project, "--platform", "all", "--yes"]
    old = cli.json(
        "publish", str(fixtures_dir / FIXTURE_OLD), *common, "--runtime-version", "1",
        "--message", "old bundle",
    )  # fmt: skip
    assert set(old["updates"]) == {"ios", "android"}
    assert old["uploadedFiles"] == 2 and old["skippedBytes"] == 0
    assert old["manifestUrl"] == f"{server.url}/api/v1/expo/{project}/manifest"

    # The DESIGN.md form, runtime version given explicitly.
    new = cli.json(
        "publish", str(fixtures_dir / FIXTURE_NEW), *common, "--channel", "production",
        "--runtime-version", "1", "--message", "new bundle", "--rollout", "50",
    )  # fmt: skip
    assert set(new["updates"]) == {"ios", "android"} and len(new["updateIds"]) == 2
    assert new["uploadedFiles"] == 3 and new["uploadedBytes"] > 800_000

    # Same files again, runtime version read from expoConfig.json: nothing is uploaded.
    again = cli.json("publish", str(fixtures_dir / FIXTURE_NEW), *common, "-m", "again")
    assert again["uploadedBytes"] == 0 and again["uploadedFiles"] == 0
    assert again["skippedBytes"] == new["uploadedBytes"] and again["skippedFiles"] == 3
    assert again["runtimeVersion"] == "1"
    human = cli.ok("publish", str(fixtures_dir / FIXTURE_NEW), *common, "-m", "human")
    assert "saved by deduplication" in human and "/manifest" in human

    ios_updates = cli.json("updates", "list", "--project", project, "--platform", "ios")
    assert [u["message"] for u in ios_updates] == ["human", "again", "new bundle", "old bundle"]
    assert cli.json("updates", "list", "--project", project, "--limit", "1")[0]["message"] == (
        "human"
    )
    table = cli.ok("updates", "list", "--project", project, "--channel", "production")
    assert new["updates"]["ios"] in table and "android" in table

    new_ios = new["updates"]["ios"]
    viewed = cli.json("updates", "view", new_ios)
    assert viewed["launchAsset"]["hash"] == NEW_IOS_BUNDLE_HASH
    assert viewed["launchAsset"]["contentType"] == "application/javascript"
    assert [(a["hash"], a["contentType"], a["fileExtension"]) for a in viewed["assets"]] == [
        (PNG_HASH, "image/png", ".png")
    ]
    assert viewed["extra"]["expoClient"]["name"] == "expo-updates-client"
    assert viewed["rollout"] == 50 and viewed["runtimeVersion"] == "1"
    assert viewed["manifest"]["id"] == new_ios
    assert viewed["manifest"]["launchAsset"]["hash"] == NEW_IOS_BUNDLE_HASH
    assert "launch" in cli.ok("updates", "view", new_ios)

    # Rollout: lower to a pause, raise again, and flip the mandatory flag.
    assert cli.json("updates", "edit", new_ios, "--rollout", "0", "--yes")["rollout"] == 0
    raised = cli.json("updates", "edit", new_ios, "--rollout", "100", "--mandatory", "--yes")
    assert raised["rollout"] == 100 and raised["mandatory"] is True

    promoted = cli.json("updates", "promote", new_ios, "--to-channel", "staging", "--yes")
    assert promoted["channel"] == "staging" and promoted["id"] != new_ios
    assert promoted["launchAsset"]["sha256"] == viewed["launchAsset"]["sha256"]

    # Roll back three ways.
    latest_android = again["updates"]["android"]
    plain = cli.json("updates", "rollback", latest_android, "--yes")
    assert plain["id"] == latest_android and plain["status"] == "rolledBack"
    old_ios = old["updates"]["ios"]
    to_old = cli.json("updates", "rollback", new_ios, "--to", old_ios, "--yes")
    assert to_old["id"] != old_ios and to_old["sourceUpdateId"] == old_ios
    assert (
        to_old["launchAsset"]["sha256"]
        == cli.json("updates", "view", old_ios)["launchAsset"]["sha256"]
    )
    embedded = cli.json("updates", "rollback", to_old["id"], "--to-embedded", "--yes")
    assert embedded["kind"] == "rollbackToEmbedded" and embedded["platform"] == "ios"
    assert "roll back to embedded" in cli.ok("updates", "list", "--project", project)

    stats = cli.json("updates", "stats", "--project", project, "--update", new_ios)
    assert isinstance(stats, dict)
    cli.ok("updates", "stats", "--project", project)

    deployments = cli.json("deployments", "list", "--project", project)
    assert {"production", "staging"} <= {d["name"] for d in deployments}
    cli.json("deployments", "create", "beta", "--project", project)
    renamed = cli.json(
        "deployments", "edit", "beta", "--name", "gamma", "--project", project, "--yes"
    )
    assert renamed["name"] == "gamma"
    assert "gamma" in cli.ok("deployments", "list", "--project", project)

    assert project in [p["slug"] for p in cli.json("projects", "list")]
    assert cli.json("projects", "view", project)["slug"] == project
    assert project in cli.ok("projects", "view", env={"LUMORA_PROJECT": project})


def test_publish_plain_directory_with_git_message(cli: Cli, project: str, tmp_path: Path) -> None:
    app = tmp_path / "pyapp"
    (app / "lib").mkdir(parents=True)
    (app / "main.py").write_text("print('hello from an OTA update')\n")
    (app / "lib" / "util.py").write_text("ANSWER = 42\n")
    (app / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + uuid.uuid4().bytes)
    git = shutil.which("git")
    if git is not None:
        for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "ship the new logo"]):
            subprocess.run(
                [git, "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                cwd=app, check=True, capture_output=True,
            )  # fmt: skip
    published = cli.json(
        "publish", str(app), "--project", project, "--launch-asset", "main.py",
        "--runtime-version", "2.0", "--platform", "android", "--channel", "py", "--yes",
    )  # fmt: skip
    assert list(published["updates"]) == ["android"] and published["uploadedFiles"] == 3
    update = cli.json("updates", "view", published["updates"]["android"])
    assert update["launchAsset"]["key"] == "main.py"
    assert sorted((a["key"], a["contentType"]) for a in update["assets"]) == [
        ("lib/util.py", "text/x-python"),
        ("logo.png", "image/png"),
    ]
    assert update["channel"] == "py" and update["runtimeVersion"] == "2.0"
    if git is not None:
        assert update["message"] == "ship the new logo"


def test_configure_file_and_whoami(cli: Cli, server: ServerProcess, project: str) -> None:
    bare = {k: v for k, v in cli.env.items() if not k.startswith("LUMORA_")}
    saved = cli.json(
        "configure", "--server", server.url, "--api-key", server.admin_key, "--project", project,
        env={"LUMORA_SERVER": "", "LUMORA_API_KEY": ""},
    )  # fmt: skip
    path = Path(saved["path"])
    assert path == Path(cli.env["XDG_CONFIG_HOME"]) / "lumora" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert server.admin_key not in json.dumps(saved)  # shown masked
    assert json.loads(path.read_text())["apiKey"] == server.admin_key

    plain = Cli(bare, cli.cwd)
    me = plain.json("whoami")
    assert me["role"] == "admin" and me["projectId"] is None
    assert "admin" in plain.ok("whoami")
    # The default project comes from the file too.
    assert plain.json("deployments", "list")[0]["projectId"]
    # The seed's spelling still works, and the environment overrides the file.
    assert plain.json("updates", "configure", "--show")["project"] == project
    dead = f"http://127.0.0.1:{free_port()}"
    assert "cannot reach" in plain.fails("whoami", env={"LUMORA_SERVER": dead})
    assert "cannot reach" in plain.fails("whoami", "--server", dead)


def test_keys_through_the_api(cli: Cli, project: str, fixtures_dir: Path) -> None:
    created = cli.json("keys", "create", "--name", "reader", "--role", "read", "--project", project)
    assert created["key"].startswith("lum_") and created["role"] == "read"
    reader = {"LUMORA_API_KEY": created["key"]}
    me = cli.json("whoami", env=reader)
    assert me["role"] == "read" and me["keyId"] == created["id"]
    denied = cli.fails(
        "publish", str(fixtures_dir / FIXTURE_NEW), "--project", project, "--yes", env=reader
    )
    assert "permission denied" in denied
    assert created["id"] in [k["id"] for k in cli.json("keys", "list")]
    assert created["key"] not in cli.ok("keys", "list")
    cli.json("keys", "revoke", created["id"], "--yes")
    assert "rejected the API key" in cli.fails("whoami", env=reader)


def test_keys_direct_on_a_data_dir(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    srv = server_factory("sqlite")
    cli = Cli({**_base_env(tmp_path), "LUMORA_SERVER": srv.url}, tmp_path)
    data_dir = str(srv.data_dir)
    # While the server runs on the same SQLite file (the README walk-through's first key).
    first = cli.json("keys", "create", "--data-dir", data_dir, "--role", "admin", "--name", "me")
    assert first["key"].startswith("lum_") and first["role"] == "admin"
    assert cli.json("whoami", env={"LUMORA_API_KEY": first["key"]})["keyId"] == first["id"]
    srv.stop()
    # And on the stopped server's data dir.
    listed = cli.json("keys", "list", "--data-dir", data_dir)
    assert {first["id"], "bootstrap admin"} <= {k["id"] for k in listed} | {
        k["name"] for k in listed
    }
    revoked = cli.json("keys", "revoke", first["id"], "--data-dir", data_dir, "--yes")
    assert revoked["revokedAt"]
    second = cli.json("keys", "create", "--database-url", srv.database_url)
    assert second["role"] == "publish"
    srv.start()
    assert "rejected" in cli.fails("whoami", env={"LUMORA_API_KEY": first["key"]})
    assert cli.json("whoami", env={"LUMORA_API_KEY": second["key"]})["role"] == "publish"
    assert "no Lumora database" in cli.fails("keys", "list", "--data-dir", str(tmp_path / "no"))
    assert "not found" in cli.fails("keys", "revoke", "nope", "--data-dir", data_dir, "--yes")


def test_codesigning_generate(
    cli: Cli, project: str, server: ServerProcess, tmp_path: Path
) -> None:
    out = tmp_path / "keys"
    cli.ok("codesigning", "generate", "--project", project, "--keyid", "main", "--out", str(out))
    key_file, cert_file = out / "private-key.pem", out / "certificate.pem"
    assert key_file.read_text().startswith("-----BEGIN")
    assert cert_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with server.client() as http:
        signing = http.get(f"/api/v1/projects/{project}/signing").json()
    assert signing["enabled"] is True and signing["keyid"] == "main"
    assert signing["certificatePem"].strip() == cert_file.read_text().strip()
    assert "--force" in cli.fails(
        "codesigning", "generate", "--project", project, "--out", str(out)
    )


def test_failures_are_one_line_errors(cli: Cli, project: str, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    assert "cannot reach" in cli.fails(
        "updates", "list", "-p", project, env={"LUMORA_SERVER": dead}
    )
    assert "rejected the API key" in cli.fails("whoami", env={"LUMORA_API_KEY": "lum_wrong"})
    assert "not found" in cli.fails("updates", "view", str(uuid.uuid4()))
    assert "not found" in cli.fails("updates", "rollback", str(uuid.uuid4()), "--yes")
    assert "not found" in cli.fails("projects", "view", f"missing-{uuid.uuid4().hex[:6]}")
    assert "not a directory" in cli.fails("publish", str(tmp_path / "absent"), "-p", project)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "metadata.json" in cli.fails("publish", str(empty), "-p", project, "--yes")
    assert "launch asset not found" in cli.fails(
        "publish", str(empty), "-p", project, "--launch-asset", "app.js", "--runtime-version", "1"
    )
    assert "no project" in cli.fails("updates", "list", code=2)
    assert cli.fails("updates", "edit", str(uuid.uuid4()), code=2)
    assert cli.fails("updates", "edit", str(uuid.uuid4()), "--rollout", "101", code=2)
    assert "no API key" in cli.fails("whoami", env={"LUMORA_API_KEY": ""})


def test_keys_direct_on_a_running_servers_database(cli: Cli, server: ServerProcess) -> None:
    created = cli.json(
        "keys", "create", "--database-url", server.database_url, "--role", "read", "--name", "db"
    )
    me = cli.json("whoami", env={"LUMORA_API_KEY": created["key"]})
    assert me["keyId"] == created["id"] and me["role"] == "read"
