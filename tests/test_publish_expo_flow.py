"""The Expo flow of the README and ``lumora publish --expo``, on the SDK 58 export.

A fake ``npx`` on PATH stands in for the app's Node tooling (no Expo app can be installed
here): ``expo export`` writes the SDK 58 export into ``dist/`` (without expoConfig.json, as
the real command), ``expo config --json --type public`` prints its app config and
``expo-updates runtimeversion:resolve`` prints a per-platform fingerprint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from expo_client_model import Device, EmbeddedBuild, run_update_cycle
from harness import ServerProcess, lumora_bin
from test_cli_e2e import Cli, _base_env
from test_expo_client_scenarios import BUILD_TIME, export_assets

FAKE_NPX = r"""#!{python}
import json, pathlib, shutil, sys
fixture = pathlib.Path({fixture!r})
config = json.loads((fixture / "expoConfig.json").read_text())
config.update(json.loads({overrides!r}))
args = sys.argv[1:]
(pathlib.Path.cwd() / "npx-calls.log").open("a").write(" ".join(args) + "\n")
if args[:2] == ["expo", "export"]:
    out = pathlib.Path.cwd() / "dist"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(fixture, out, ignore=shutil.ignore_patterns("expoConfig.json"))
    print("Exported: dist", file=sys.stderr)
elif args[:2] == ["expo", "config"]:
    print(json.dumps(config))
elif args[:2] == ["expo-updates", "runtimeversion:resolve"]:
    print(json.dumps({{"runtimeVersion": "fp-" + args[args.index("--platform") + 1],
                       "fingerprintSources": []}}))
else:
    print("unknown command " + " ".join(args), file=sys.stderr)
    sys.exit(3)
"""


def fake_npx(tmp_path: Path, fixture: Path, **overrides: object) -> str:
    """A bin directory holding the fake ``npx``; returns a PATH that finds it first."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "npx"
    script.write_text(
        FAKE_NPX.format(
            python=sys.executable, fixture=str(fixture), overrides=json.dumps(overrides)
        )
    )
    script.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{Path(lumora_bin()).parent}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture
def cli(server: ServerProcess, tmp_path: Path) -> Cli:
    env = _base_env(tmp_path)
    env.update(LUMORA_SERVER=server.url, LUMORA_API_KEY=server.admin_key)
    return Cli(env, tmp_path)


@pytest.fixture
def project(cli: Cli, unique: str) -> str:
    return str(cli.json("projects", "create", f"Flow {unique}", "--slug", f"flow-{unique}")["slug"])


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "my-app"
    root.mkdir()
    (root / "package.json").write_text('{"name": "my-app", "private": true}')
    return root


def readme_expo_block() -> str:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    match = re.search(r"<!-- expo-flow -->\s*```sh\n(.*?)```", readme, re.S)
    assert match, "README has no expo-flow block"
    return match.group(1)


def test_the_readme_expo_flow_runs_verbatim(
    cli: Cli, project: str, app: Path, fixtures_dir: Path, server: ServerProcess
) -> None:
    v1 = fixtures_dir / "expo-export-sdk58-v1"
    env = {**cli.env, "PATH": fake_npx(app.parent, v1), "LUMORA_PROJECT": project}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_expo_block()],
        cwd=app.parent, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((app / "dist" / "expoConfig.json").read_text())["runtimeVersion"] == "1.0.0"
    device = Device(EmbeddedBuild("1.0.0", BUILD_TIME, {"embedded-bundle": b"//"}))
    with httpx.Client() as client:
        url = f"{server.url}/api/v1/expo/{project}/manifest"
        assert run_update_cycle(device, client, url) == "downloaded"
    assert all(device.resolve_asset(m) == d for m, d in export_assets(v1, "ios").items())
    assert device.build and (app / "dist" / "metadata.json").is_file()


def test_an_export_without_expo_config_names_the_command(
    cli: Cli, project: str, fixtures_dir: Path, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    shutil.copytree(
        fixtures_dir / "expo-export-sdk58-v1",
        dist,
        ignore=shutil.ignore_patterns("expoConfig.json"),
    )
    line = cli.fails("publish", str(dist), "--project", project, "--yes")
    assert "npx expo config --json --type public > dist/expoConfig.json" in line
    assert "extra.expoClient" in line


def test_publish_expo_runs_the_apps_tooling(
    cli: Cli, project: str, app: Path, fixtures_dir: Path
) -> None:
    path = fake_npx(app.parent, fixtures_dir / "expo-export-sdk58-v1")
    result = cli.json("publish", "--expo", str(app), "--project", project, "--yes",
                      env={"PATH": path})  # fmt: skip
    assert set(result["updates"]) == {"ios", "android"} and result["runtimeVersion"] == "1.0.0"
    calls = (app / "npx-calls.log").read_text().splitlines()
    assert calls == ["expo export --output-dir dist", "expo config --json --type public"]
    assert (app / "dist" / "expoConfig.json").is_file()


def test_a_fingerprint_runtime_version_is_resolved_per_platform(
    cli: Cli, project: str, app: Path, fixtures_dir: Path, server: ServerProcess
) -> None:
    v1 = fixtures_dir / "expo-export-sdk58-v1"
    path = fake_npx(app.parent, v1, runtimeVersion={"policy": "fingerprint"})
    result = cli.json("publish", "--expo", str(app), "--project", project, "--yes",
                      env={"PATH": path})  # fmt: skip
    assert result["runtimeVersions"] == {"ios": "fp-ios", "android": "fp-android"}
    assert len(result["groupIds"]) == 2 and set(result["updates"]) == {"ios", "android"}
    for platform in ("ios", "android"):
        build = EmbeddedBuild(f"fp-{platform}", BUILD_TIME, {"embedded-bundle": b"//"})
        device = Device(build, platform=platform)
        with httpx.Client() as client:
            url = f"{server.url}/api/v1/expo/{project}/manifest"
            assert run_update_cycle(device, client, url) == "downloaded"
        assert device.running_id == result["updates"][platform]
    # An export already made (dist/ inside the app) resolves it the same way.
    again = cli.json("publish", str(app / "dist"), "--project", project, "--yes",
                     env={"PATH": path})  # fmt: skip
    assert again["runtimeVersions"] == {"ios": "fp-ios", "android": "fp-android"}


def test_publish_expo_without_node_says_so(cli: Cli, project: str, app: Path) -> None:
    empty = app.parent / "empty-bin"
    empty.mkdir()
    line = cli.fails("publish", "--expo", str(app), "--project", project, "--yes",
                     env={"PATH": str(empty)})  # fmt: skip
    assert "npx" in line and "Node.js" in line
