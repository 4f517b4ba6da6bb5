"""Soak: mixed device load (check, Expo manifest, asset downloads) while updates are published
and rolled back, for a bounded time. Proves zero errors, bounded memory growth of the server
process tree, and statistics that add up to exactly the requests sent.

``LUMORA_SOAK_SECONDS`` (default 60 per backend; 600 for the nightly mode, also what
LUMORA_LONG_TESTS=1 selects) sets the length,
``LUMORA_SOAK_RSS_GROWTH_MB`` (default 96) the allowed RSS growth after warm-up.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import ServerProcess, _children, create_project, make_export, publish_export

LONG = os.environ.get("LUMORA_LONG_TESTS") == "1"
SOAK_SECONDS = float(os.environ.get("LUMORA_SOAK_SECONDS", "600" if LONG else "60"))
RSS_GROWTH_MB = float(os.environ.get("LUMORA_SOAK_RSS_GROWTH_MB", "96"))
DEVICE_WORKERS = 6
DEVICES = [f"soak-device-{i:04d}" for i in range(300)]


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except FileNotFoundError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total += int(match.group(1)) * 1024 if match else 0
    return total


@dataclass
class Tally:
    """What the load generator sent and saw (thread-safe)."""

    checks: int = 0
    asset_bytes: int = 0
    devices: set[str] = field(default_factory=set)
    requests: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, kind: str, *, check: bool = False, nbytes: int = 0, device: str = "") -> None:
        with self.lock:
            self.requests[kind] += 1
            self.checks += int(check)
            self.asset_bytes += nbytes
            if device:
                self.devices.add(device)

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)


def _device_loop(
    server: ServerProcess, slug: str, tally: Tally, deadline: float, seed: int
) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        while time.monotonic() < deadline:
            device = rng.choice(DEVICES)
            platform = rng.choice(["ios", "android"])
            try:
                if rng.random() < 0.5:
                    resp = c.post(
                        "/api/v1/updates/check",
                        json={
                            "projectId": slug,
                            "platform": platform,
                            "runtimeVersion": "1",
                            "deviceId": device,
                        },
                    )
                    if resp.status_code != 200:
                        tally.error(f"check: {resp.status_code} {resp.text[:200]}")
                        continue
                    tally.note("check", check=True, device=device)
                    manifest = resp.json().get("manifest")
                    if manifest and rng.random() < 0.5:
                        asset = rng.choice([manifest["launchAsset"], *manifest["assets"]])
                        got = c.get(asset["url"], headers={"accept-encoding": "identity"})
                        if got.status_code != 200 or len(got.content) != asset["size"]:
                            tally.error(f"asset: {got.status_code} {len(got.content)}")
                            continue
                        tally.note("asset", nbytes=len(got.content))
                else:
                    resp = c.get(
                        f"/api/v1/expo/{slug}/manifest",
                        headers={
                            "expo-protocol-version": "1",
                            "expo-platform": platform,
                            "expo-runtime-version": "1",
                            "eas-client-id": device,
                            "accept": "multipart/mixed",
                        },
                    )
                    if resp.status_code != 200:
                        tally.error(f"manifest: {resp.status_code} {resp.text[:200]}")
                        continue
                    tally.note("manifest", check=True, device=device)
            except httpx.HTTPError as exc:
                tally.error(f"transport: {exc!r}")


def _publisher_loop(
    server: ServerProcess, slug: str, root: Path, tally: Tally, deadline: float
) -> None:
    n = 0
    with server.client() as c:
        while time.monotonic() < deadline:
            n += 1
            try:
                answer, _ = publish_export(c, slug, make_export(root / f"p{n}", seed=f"soak-{n}"))
                tally.note("publish")
                if n % 3 == 0:
                    for update in answer["updates"]:
                        resp = c.post(f"/api/v1/updates/{update['id']}/rollback", json={})
                        if resp.status_code != 200:
                            tally.error(f"rollback: {resp.status_code} {resp.text[:200]}")
                        tally.note("rollback")
            except (httpx.HTTPError, AssertionError) as exc:
                tally.error(f"publish: {exc!r}"[:300])
            time.sleep(0.5)


def _asset_bytes_metric(server: ServerProcess) -> float:
    text = httpx.get(
        f"{server.url}/metrics", headers={"authorization": f"Bearer {server.admin_key}"}, timeout=30
    ).text
    match = re.search(r"^lumora_stats_asset_bytes (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return
        time.sleep(0.2)


@pytest.mark.slow
def test_soak_mixed_load_with_publishes(
    server: ServerProcess, server_factory: Any, tmp_path: Path
) -> None:
    backend = "sqlite" if server.database_url.startswith("sqlite") else "postgres"
    soak = server_factory(backend, extra_env={"LUMORA_LOG_LEVEL": "warning"})
    assert soak.proc is not None
    slug = "soak"
    with soak.client() as c:
        create_project(c, slug)
        publish_export(c, slug, make_export(tmp_path / "base", seed="soak-base"))
    tally = Tally()
    start = time.monotonic()
    deadline = start + SOAK_SECONDS
    warmup = min(15.0, SOAK_SECONDS / 4)
    samples: list[int] = []
    with ThreadPoolExecutor(DEVICE_WORKERS + 1) as pool:
        futures = [
            pool.submit(_device_loop, soak, slug, tally, deadline, seed)
            for seed in range(DEVICE_WORKERS)
        ]
        futures.append(pool.submit(_publisher_loop, soak, slug, tmp_path, tally, deadline))
        time.sleep(warmup)
        baseline = tree_rss_bytes(soak.proc.pid)
        while time.monotonic() < deadline:
            samples.append(tree_rss_bytes(soak.proc.pid))
            time.sleep(1.0)
        for f in futures:
            f.result()
    final = tree_rss_bytes(soak.proc.pid)
    assert tally.errors == [], tally.errors[:20]
    assert tally.requests["check"] > 100 and tally.requests["manifest"] > 100, tally.requests
    assert tally.requests["publish"] >= 3 and tally.requests["rollback"] >= 2, tally.requests
    growth_mb = (max([final, *samples]) - baseline) / 2**20
    assert growth_mb < RSS_GROWTH_MB, f"RSS grew {growth_mb:.1f} MB after warm-up"

    # Statistics add up to exactly what was sent, once the recorder has flushed.
    with soak.client() as c:

        def totals() -> dict[str, Any]:
            report: dict[str, Any] = c.get("/api/v1/stats", params={"project": slug}).json()
            return report["totals"]

        _wait_for(lambda: totals()["checks"] >= tally.checks)
        got = totals()
    assert got["checks"] == tally.checks, (got, tally.requests)
    assert got["uniqueDevices"] == len(tally.devices)
    _wait_for(lambda: _asset_bytes_metric(soak) >= tally.asset_bytes)
    assert _asset_bytes_metric(soak) == tally.asset_bytes
    assert soak.proc.poll() is None
