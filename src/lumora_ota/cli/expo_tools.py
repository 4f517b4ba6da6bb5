"""Running the app's own Expo tooling (``npx``) for ``lumora publish``.

As ``eas update`` does, ``lumora publish --expo PROJECT_DIR`` bundles for the user: it runs
``npx expo export`` and then ``npx expo config --json --type public`` into
``dist/expoConfig.json`` (the flow of Expo's self-hosting guide, which fills
``extra.expoClient``). A ``{"policy": "fingerprint"}`` runtime version is resolved per
platform with the app's ``npx expo-updates runtimeversion:resolve --platform P``, the command
EAS CLI uses. Every failure is a ``CliError`` naming the command that failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from lumora_ota.cli.errors import CliError

CONFIG_COMMAND = "npx expo config --json --type public > dist/expoConfig.json"
EXPORT_TIMEOUT = 1800.0  # a large app's export (Metro + Hermes) takes minutes
TOOL_TIMEOUT = 600.0


def npx() -> str:
    """The ``npx`` executable; CliError when Node.js is not installed."""
    found = shutil.which("npx")
    if found is None:
        raise CliError("this needs Node.js: `npx` is not on PATH (install Node.js 18 or later)")
    return found


def run_npx(
    project_dir: Path, args: list[str], *, timeout: float = TOOL_TIMEOUT, show: bool = False
) -> str:
    """Run ``npx ARGS`` in ``project_dir`` and return its stdout; CliError (with the last
    line of its stderr) when it fails. ``show`` passes its stderr through (progress)."""
    command = ["npx", *args]
    try:
        done = subprocess.run(  # noqa: S603 - fixed program, argv list, no shell
            [npx(), *args],
            cwd=project_dir,
            stdout=subprocess.PIPE,
            stderr=None if show else subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "CI": os.environ.get("CI", "1")},  # no interactive prompts
        )
    except subprocess.TimeoutExpired:
        raise CliError(f"`{' '.join(command)}` did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise CliError(f"cannot run `{' '.join(command)}`: {exc.strerror or exc}") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or "").splitlines() if line.strip()]
        reason = f": {lines[-1].strip()}" if lines else ""
        raise CliError(f"`{' '.join(command)}` failed (exit {done.returncode}){reason}")
    return done.stdout


def check_project_dir(project_dir: Path) -> Path:
    """``project_dir`` when it looks like an Expo app (a package.json); else CliError."""
    if not project_dir.is_dir():
        raise CliError(f"not a directory: {project_dir}")
    if not (project_dir / "package.json").is_file():
        raise CliError(f"{project_dir} is not an app directory (no package.json)")
    return project_dir


def export_app(project_dir: Path, platform: str, *, show: bool) -> Path:
    """``npx expo export`` into ``PROJECT_DIR/dist``, then its public config into
    ``dist/expoConfig.json``; returns the dist directory."""
    check_project_dir(project_dir)
    npx()  # Node.js missing: say so before anything runs
    out = project_dir / "dist"
    args = ["expo", "export", "--output-dir", "dist"]
    if platform != "all":
        args += ["--platform", platform]
    if show:
        print(f"running npx {' '.join(args)} in {project_dir}", file=sys.stderr)
    run_npx(project_dir, args, timeout=EXPORT_TIMEOUT, show=show)
    if not (out / "metadata.json").is_file():
        raise CliError(f"`npx expo export` wrote no {out / 'metadata.json'}")
    raw = run_npx(project_dir, ["expo", "config", "--json", "--type", "public"])
    try:
        config = json.loads(raw)
    except ValueError:
        raise CliError("`npx expo config --json --type public` printed no JSON") from None
    if not isinstance(config, dict):
        raise CliError("`npx expo config --json --type public` printed no JSON object")
    (out / "expoConfig.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def resolve_runtime_version(project_dir: Path, platform: str) -> str:
    """The runtime version the app's expo-updates resolves for ``platform`` (fingerprint and
    any other policy): ``npx expo-updates runtimeversion:resolve --platform P``."""
    check_project_dir(project_dir)
    raw = run_npx(project_dir, ["expo-updates", "runtimeversion:resolve", "--platform", platform])
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    value = answer.get("runtimeVersion") if isinstance(answer, dict) else None
    if not isinstance(value, str) or not value:
        raise CliError(
            f"`npx expo-updates runtimeversion:resolve --platform {platform}` gave no"
            " runtimeVersion"
        )
    return value
