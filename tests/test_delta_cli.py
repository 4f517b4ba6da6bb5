"""``lumora embedded register/list/delta`` against a real server: the first update after a
store install becomes a patch from the build's embedded bundle."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from delta_helpers import (
    NEW_EXPORT,
    OLD_EXPORT,
    PATCH_WAIT_SECONDS,
    get_launch_asset,
    updates_by_platform,
)
from harness import ServerProcess, create_project, publish_export
from lumora_ota.cli.main import run


@pytest.fixture
def cli_env(server: ServerProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    slug = f"delta-cli-{uuid.uuid4().hex[:8]}"
    with server.client() as client:
        create_project(client, slug)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("LUMORA_SERVER", server.url)
    monkeypatch.setenv("LUMORA_API_KEY", server.admin_key)
    monkeypatch.setenv("LUMORA_PROJECT", slug)
    monkeypatch.setenv("COLUMNS", "200")  # rich: keep ids on one line
    return slug


def lumora_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    capsys.readouterr()
    assert run([*args, "--json"]) == 0, capsys.readouterr().err
    answer: dict[str, object] = json.loads(capsys.readouterr().out)
    return answer


def test_register_the_embedded_bundle_and_get_a_patch(
    server: ServerProcess,
    fixtures_dir: Path,
    cli_env: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    embedded_id = str(uuid.uuid4())
    registered = lumora_json(
        capsys,
        "embedded", "register", str(fixtures_dir / OLD_EXPORT),
        "--platform", "android", "--runtime-version", "1",
        "--embedded-update-id", embedded_id,
    )  # fmt: skip
    assert registered["embeddedUpdateId"] == embedded_id
    listed = lumora_json(capsys, "embedded", "list")
    assert [i["embeddedUpdateId"] for i in listed["items"]] == [embedded_id]  # type: ignore[attr-defined]

    with server.client() as client:
        new, _ = publish_export(client, cli_env, fixtures_dir / NEW_EXPORT, runtime_version="1")
    update = updates_by_platform(new)["android"]
    deadline = time.monotonic() + PATCH_WAIT_SECONDS
    while not (delta := lumora_json(capsys, "embedded", "delta", update["id"]))["patches"]:
        assert time.monotonic() < deadline, delta
        time.sleep(0.25)
    assert [p["baseUpdateId"] for p in delta["patches"]] == [embedded_id]  # type: ignore[attr-defined]

    resp = get_launch_asset(server, update, current=embedded_id, embedded=embedded_id)
    assert resp.status_code == 226 and resp.headers["expo-base-update-id"] == embedded_id

    capsys.readouterr()
    assert run(["embedded", "delta", update["id"]]) == 0
    shown = capsys.readouterr().out
    assert f"patch from {embedded_id}" in shown and "saved by patches" in shown

    viewed = lumora_json(capsys, "updates", "view", update["id"])
    assert [p["baseUpdateId"] for p in viewed["delta"]["patches"]] == [embedded_id]  # type: ignore[index]
    assert run(["updates", "view", update["id"]]) == 0
    assert "saved by compression" in capsys.readouterr().out


def test_register_refuses_an_unknown_platform(
    cli_env: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bundle = tmp_path / "index.js"
    bundle.write_text("console.log(1)")
    code = run(
        ["embedded", "register", str(bundle), "--platform", "symbian",
         "--runtime-version", "1", "--embedded-update-id", "x"]
    )  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.startswith("error: unknown platform")
