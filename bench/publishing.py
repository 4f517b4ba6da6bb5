"""The publishing scenario: an ``expo export``-shaped folder of ``publish_files`` files
totalling ``publish_bytes``, published twice. The second publish must upload nothing.

It goes through ``lumora publish --yes --json`` (what a user runs) when the CLI has that
command, and through the management API from this process otherwise (said in the result).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.api import ManagementApi
from bench.dataset import RUNTIME_VERSION
from bench.processes import lumora_executable
from bench.synth import SynthFile, image, js_bundle

CHANNEL = "publish-bench"
PLATFORMS = ("ios", "android")


def write_export(root: Path, files: int, total_bytes: int, seed: str) -> list[SynthFile]:
    """Write the export folder: one bundle per platform and ``files - 2`` assets."""
    per_file = total_bytes // files
    (root / "bundles").mkdir(parents=True, exist_ok=True)
    (root / "assets").mkdir(exist_ok=True)
    assets = [image(f"{seed}-asset-{i}", per_file, i) for i in range(files - len(PLATFORMS))]
    asset_meta = []
    for asset in assets:
        name = hashlib.md5(asset.data, usedforsecurity=False).hexdigest()
        (root / "assets" / name).write_bytes(asset.data)
        asset_meta.append({"path": f"assets/{name}", "ext": asset.file_extension.lstrip(".")})
    written = list(assets)
    meta: dict[str, Any] = {}
    for platform in PLATFORMS:
        bundle = js_bundle(f"{seed}-{platform}", per_file)
        name = (
            f"bundles/{platform}-{hashlib.md5(bundle.data, usedforsecurity=False).hexdigest()}.js"
        )
        (root / name).write_bytes(bundle.data)
        written.append(bundle)
        meta[platform] = {"bundle": name, "assets": asset_meta}
    (root / "metadata.json").write_text(
        json.dumps({"version": 0, "bundler": "metro", "fileMetadata": meta})
    )
    (root / "expoConfig.json").write_text(
        json.dumps({"name": "bench", "slug": "bench", "runtimeVersion": RUNTIME_VERSION})
    )
    return written


def cli_has_publish() -> bool:
    """Whether this ``lumora`` has the ``publish`` command yet."""
    proc = subprocess.run(
        [lumora_executable(), "publish", "--help"], capture_output=True, check=False
    )
    return proc.returncode == 0


def _find_uploaded_bytes(payload: Any) -> int | None:
    if isinstance(payload, dict):
        for key, value in payload.items():
            if key == "uploadedBytes" and isinstance(value, int):
                return value
            found = _find_uploaded_bytes(value)
            if found is not None:
                return found
    return None


def publish_with_cli(
    folder: Path, base_url: str, key: str, project: str, message: str
) -> dict[str, Any]:
    """Run ``lumora publish --yes --json``; returns wall seconds and the upload figure."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMORA_")}
    env.update({"LUMORA_SERVER": base_url, "LUMORA_API_KEY": key, "LUMORA_PROJECT": project})
    args = [
        lumora_executable(), "publish", str(folder), "--project", project, "--channel", CHANNEL,
        "--platform", "all", "--runtime-version", RUNTIME_VERSION, "--message", message,
        "--rollout", "100", "--yes", "--json",
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"lumora publish failed: {proc.stderr.strip()[-600:]}")
    payload = json.loads(proc.stdout)
    return {
        "seconds": seconds,
        "uploadedBytes": _find_uploaded_bytes(payload),
        "method": "lumora publish --yes --json",
    }


async def publish_with_api(
    api: ManagementApi, files: list[SynthFile], project: str, message: str
) -> dict[str, Any]:
    """Hash, ask which are missing, upload those, publish: what the CLI does, in-process."""
    started = time.perf_counter()
    # Hash from the bytes as the CLI would from disk, so the timing includes it.
    for f in files:
        hashlib.sha256(f.data).hexdigest()
    uploaded = await api.upload(project, files)
    assets, bundles = files[: -len(PLATFORMS)], files[-len(PLATFORMS) :]
    body = {
        "project": project,
        "channel": CHANNEL,
        "runtimeVersion": RUNTIME_VERSION,
        "message": message,
        "rollout": 100,
        "platforms": {
            platform: {
                "launchAsset": bundle.ref(f"bundles/{platform}-{bundle.sha256[:32]}.js"),
                "assets": [a.ref(f"assets/{a.sha256[:32]}") for a in assets],
            }
            for platform, bundle in zip(PLATFORMS, bundles, strict=True)
        },
    }
    await api.publish(body)
    return {
        "seconds": time.perf_counter() - started,
        "uploadedBytes": uploaded,
        "method": "management API from the bench process",
    }


def run_publishing(
    workdir: Path, base_url: str, key: str, project: str, files: int, total_bytes: int
) -> dict[str, Any]:
    """Publish the folder twice; returns both timings."""
    folder = workdir / f"export-{project}"
    written = write_export(folder, files, total_bytes, seed=project)
    total = sum(f.size for f in written)
    results: dict[str, Any] = {"files": len(written), "bytes": total}
    if cli_has_publish():
        first = publish_with_cli(folder, base_url, key, project, "first")
        again = publish_with_cli(folder, base_url, key, project, "again")
    else:

        async def both() -> tuple[dict[str, Any], dict[str, Any]]:
            api = ManagementApi(base_url, key, concurrency=8)
            try:
                return (
                    await publish_with_api(api, written, project, "first"),
                    await publish_with_api(api, written, project, "again"),
                )
            finally:
                await api.aclose()

        first, again = asyncio.run(both())
    results["first"] = first
    results["again"] = again
    return results
