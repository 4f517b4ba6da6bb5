"""The statistics flood of security issue 15, item 3, against a real ``lumora serve``.

For ``--seconds`` (default 60) ``--connections`` clients send Expo manifest GETs as fast as
the server answers, each naming ``--ids`` (50) random update ids in
``expo-recent-failed-update-ids``, from a pool of ``--devices`` device ids (``--devices 0``:
a new random device id per request, the worst case, where rows grow with the invented
devices). Meanwhile a probe device asks every 0.5 s, and its latency is recorded. Before and
after: the database size (SQLite file with its WAL), the server's RSS (supervisor and
workers) and the statistics rows.

Run (loopback only; the server is started and stopped by this script)::

    .venv/bin/python -m bench.stats_flood --seconds 60 --json flood.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.api import ManagementApi
from bench.processes import LumoraServer
from bench.publishing import CHANNEL, publish_with_api, write_export

STATS_TABLES = ("device_update_facts", "device_served", "device_state", "device_days")


def database_bytes(data_dir: Path) -> int:
    """The SQLite database's size on disk, with its WAL and shared-memory files."""
    return sum(p.stat().st_size for p in data_dir.glob("lumora.db*") if p.is_file())


def server_rss(pid: int) -> dict[str, int]:
    """RSS of the server process tree: the supervisor and its workers."""
    root = psutil.Process(pid)
    workers = sum(p.memory_info().rss for p in root.children(recursive=True))
    return {"mainRssBytes": root.memory_info().rss, "workersRssBytes": workers}


def stats_rows(data_dir: Path) -> dict[str, int]:
    """Rows in the statistics tables (read-only connection)."""
    db = sqlite3.connect(f"file:{data_dir / 'lumora.db'}?mode=ro", uri=True)
    try:
        counts = {}
        for name in (*STATS_TABLES, "stat_counters"):
            try:
                counts[name] = db.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            except sqlite3.OperationalError:
                counts[name] = -1  # the table does not exist in this version
        return counts
    finally:
        db.close()


def snapshot(server: LumoraServer) -> dict[str, Any]:
    return {
        "databaseBytes": database_bytes(server.data_dir),
        **server_rss(server.pid),
        "rows": stats_rows(server.data_dir),
    }


async def prepare(server: LumoraServer, key: str, workdir: Path) -> str:
    """A project with one published update; returns its slug."""
    api = ManagementApi(server.url, key, concurrency=4)
    try:
        slug = "flood"
        await api.create_project(slug, "Flood")
        files = write_export(workdir / "export", files=4, total_bytes=64 * 1024, seed="flood")
        await publish_with_api(api, files, slug, "flood target")
        return slug
    finally:
        await api.aclose()


def flood(
    url: str, slug: str, seconds: float, connections: int, ids: int, devices: int
) -> dict[str, Any]:
    """Run the flood and the probe; returns request counts and probe latencies."""
    stop = threading.Event()
    sent = [0] * connections
    errors = [0] * connections
    pool = [f"flood-{i}" for i in range(devices)]
    path = f"/api/v1/expo/{slug}/manifest"
    base = {
        "expo-protocol-version": "1",
        "expo-platform": "ios",
        "expo-runtime-version": "1",
        "expo-channel-name": CHANNEL,
        "accept": "multipart/mixed",
    }

    def attacker(n: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                device = pool[sent[n] % devices] if devices else uuid.uuid4().hex
                failed = ", ".join(f'"{uuid.uuid4()}"' for _ in range(ids))
                headers = {
                    **base,
                    "eas-client-id": device,
                    "expo-recent-failed-update-ids": failed,
                }
                try:
                    resp = client.get(path, headers=headers)
                    if resp.status_code != 200:
                        errors[n] += 1
                except httpx.HTTPError:
                    errors[n] += 1
                sent[n] += 1

    latencies: list[float] = []

    def probe() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while not stop.wait(0.5):
                started = time.perf_counter()
                client.get(path, headers={**base, "eas-client-id": "probe"})
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=attacker, args=(n,)) for n in range(connections)]
    threads.append(threading.Thread(target=probe))
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    ordered = sorted(latencies) or [0.0]
    return {
        "requests": sum(sent),
        "errors": sum(errors),
        "requestsPerSecond": round(sum(sent) / seconds, 1),
        "probeLatencySeconds": {
            "median": round(statistics.median(ordered), 4),
            "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 4),
            "max": round(ordered[-1], 4),
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lumora-flood-") as tmp:
        workdir = Path(tmp)
        key = "lum_bench_" + secrets.token_urlsafe(24)
        server = LumoraServer(data_dir=workdir / "data", admin_key=key).start()
        try:
            slug = asyncio.run(prepare(server, key, workdir))
            time.sleep(2)  # let the publish's statistics and caches settle
            before = snapshot(server)
            load = flood(server.url, slug, args.seconds, args.connections, args.ids, args.devices)
            time.sleep(3)  # two stats flushes: everything recorded is on disk
            after = snapshot(server)
        finally:
            server.stop()
        return {
            "command": server.command(),
            "seconds": args.seconds,
            "connections": args.connections,
            "idsPerRequest": args.ids,
            "devices": args.devices or "random per request",
            "load": load,
            "before": before,
            "after": after,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--ids", type=int, default=50)
    parser.add_argument("--devices", type=int, default=200, help="0: random per request")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
