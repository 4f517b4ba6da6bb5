"""Helpers of the delta-update tests: publishing the real export pair, waiting for patches,
requesting launch assets the way expo-updates does, and applying with classic ``bspatch``."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import ServerProcess

OLD_EXPORT = "expo-export-1666629107"
NEW_EXPORT = "expo-export-1674170951"
PATCH_WAIT_SECONDS = 240.0


def updates_by_platform(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A publish answer's updates keyed by platform."""
    return {u["platform"]: u for u in answer["updates"]}


def wait_for_patch(
    client: httpx.Client, target_update_id: str, base_update_id: str
) -> dict[str, Any]:
    """Poll ``GET /updates/{id}/delta`` (bounded) until the patch from ``base_update_id`` is
    recorded and the brotli size of the full bundle is known; returns that document."""
    deadline = time.monotonic() + PATCH_WAIT_SECONDS
    while True:
        resp = client.get(f"/api/v1/updates/{target_update_id}/delta")
        assert resp.status_code == 200, resp.text
        doc: dict[str, Any] = resp.json()
        bases = {p["baseUpdateId"] for p in doc["patches"]}
        if base_update_id in bases and doc["launchAsset"]["sizes"]["br"] is not None:
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no patch from {base_update_id} after {PATCH_WAIT_SECONDS}s: {doc}"
            )
        time.sleep(0.25)


@dataclass(frozen=True)
class Fetched:
    """A response whose body is the raw bytes that crossed the wire (still encoded)."""

    status_code: int
    headers: httpx.Headers
    content: bytes


def launch_path(update: dict[str, Any]) -> str:
    """The path part of an update's launch-asset URL."""
    return str(httpx.URL(update["launchAsset"]["url"]).raw_path.decode())


def get_launch_asset(
    server: ServerProcess,
    update: dict[str, Any],
    *,
    a_im: str | None = "bsdiff",
    current: str | None = None,
    embedded: str | None = None,
    accept_encoding: str = "br, gzip",
) -> Fetched:
    """GET an update's launch asset with the headers of expo-updates 55+ (None = omitted);
    the body is kept raw (not decoded) so sizes are what crossed the wire."""
    headers = {
        "expo-requested-update-id": update["id"],
        "expo-platform": update["platform"],
        "expo-runtime-version": update["runtimeVersion"],
        "accept-encoding": accept_encoding,
    }
    for name, value in (
        ("a-im", a_im),
        ("expo-current-update-id", current),
        ("expo-embedded-update-id", embedded),
    ):
        if value is not None:
            headers[name] = value
    with server.anon() as client, client.stream("GET", launch_path(update), headers=headers) as r:
        raw = b"".join(r.iter_raw())
        headers = httpx.Headers(r.headers)
        if r.history:
            # On an object store the app answers with a redirect and the store sends the
            # bytes: the caching contract (vary) is the app's answer for the asset URL.
            headers["vary"] = r.history[0].headers.get("vary", "")
    return Fetched(r.status_code, headers, raw)


def bspatch(old: bytes, patch: bytes, workdir: Path) -> bytes:
    """Apply a patch with Debian's classic ``bspatch`` (not code we wrote)."""
    tool = shutil.which("bspatch")
    if tool is None:
        pytest.skip("classic bspatch is missing: apt-get install -y bsdiff")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "old").write_bytes(old)
    (workdir / "patch").write_bytes(patch)
    subprocess.run(
        [tool, str(workdir / "old"), str(workdir / "new"), str(workdir / "patch")],
        check=True,
        capture_output=True,
    )
    return (workdir / "new").read_bytes()


def assert_full_bundle(resp: Fetched) -> None:
    """A full-bundle answer: 200, no ``im``, and a ``vary`` that keeps caches apart."""
    assert resp.status_code == 200, resp.content[:200]
    assert "im" not in resp.headers
    assert "expo-base-update-id" not in resp.headers
    vary = {v.strip().lower() for v in resp.headers.get("vary", "").split(",")}
    assert {"a-im", "expo-current-update-id", "accept-encoding"} <= vary
