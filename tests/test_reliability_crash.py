"""Crash consistency: SIGKILL the server at random moments while publishes, rollbacks,
promotions and rollout edits run concurrently, restart it on the same data folder and
database, and prove after every round that

* the database is intact (SQLite ``integrity_check`` + ``foreign_key_check``; on both
  backends every foreign key of the schema resolves),
* every visible update has all its assets in the blob store with the right bytes,
* no update group is half-published (a publish made both platforms or nothing, each update
  with its launch asset and all its assets),
* no file under a final blob name is partial or wrong (re-hashed; compressed variants
  decompress to their blob),
* and a retried publish succeeds and is served.

``LUMORA_CRASH_ROUNDS`` sets the number of kills per backend (default 50; LUMORA_LONG_TESTS=1
makes it 200).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import brotli
import httpx
import pytest
from sqlalchemy import Engine, MetaData, text

from harness import (
    ServerProcess,
    create_pg_database,
    create_project,
    drop_pg_database,
    export_publish_body,
    make_export,
    upload_missing,
)
from lumora_ota.store.blobs import FileBlobStore
from lumora_ota.store.db import create_db_engine
from lumora_ota.store.models import Base

LONG = os.environ.get("LUMORA_LONG_TESTS") == "1"
ROUNDS = int(os.environ.get("LUMORA_CRASH_ROUNDS", "200" if LONG else "50"))
WORKERS = 3
# Independent servers killed in parallel: a restart is mostly interpreter start-up, so two
# lanes halve the wall time on a 2-core machine.
LANES = 2
PLATFORMS = {"ios", "android"}
ASSETS_PER_UPDATE = 3  # make_export(n_assets=2) + the launch asset


@dataclass
class Crashable:
    """A server that is killed and restarted on the same data folder and database."""

    data_dir: Path
    database_url: str
    admin_key: str
    current: ServerProcess | None = None
    restarts: int = 0

    def start(self) -> ServerProcess:
        # Same port each time is not needed; clients are rebuilt after each restart.
        self.current = ServerProcess(
            data_dir=self.data_dir, database_url=self.database_url, admin_key=self.admin_key,
            extra_env={"LUMORA_LOG_LEVEL": "warning"},
        ).start()  # fmt: skip
        self.restarts += 1
        return self.current


@pytest.fixture(params=["sqlite", "postgres"])
def crashables(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Crashable]]:
    """``LANES`` independent data folders + databases of one backend, killed in parallel."""
    backend: str = request.param
    if backend not in os.environ.get("LUMORA_TEST_BACKENDS", "sqlite,postgres").split(","):
        pytest.skip(f"{backend} is not among LUMORA_TEST_BACKENDS")
    targets: list[Crashable] = []
    try:
        for lane in range(LANES):
            data_dir = tmp_path / f"data{lane}"
            url = (
                f"sqlite:///{data_dir / 'lumora.db'}"
                if backend == "sqlite"
                else create_pg_database()
            )
            targets.append(Crashable(data_dir, url, admin_key="lum_crash_" + "k" * 24))
        yield targets
    finally:
        for target in targets:
            if target.current is not None:
                target.current.kill()
            if backend == "postgres":
                drop_pg_database(target.database_url)


@dataclass
class Workload:
    """Concurrent management traffic until the server dies; remembers what it saw."""

    server: ServerProcess
    project: str
    exports: list[Path]
    rng: random.Random
    update_ids: list[str]
    server_errors: list[str] = field(default_factory=list)
    answered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, stop: threading.Event) -> None:
        """One worker: random operations until the server is gone or ``stop`` is set."""
        with self.server.client() as c:
            while not stop.is_set():
                try:
                    self._one(c)
                except httpx.TransportError:
                    return  # killed

    def _one(self, c: httpx.Client) -> None:
        with self.lock:
            op = self.rng.choices(["publish", "rollback", "rollout", "promote"], [4, 2, 3, 2])[0]
            target = self.rng.choice(self.update_ids) if self.update_ids else None
            export = self.rng.choice(self.exports)
            channel = self.rng.choice(["production", "staging", "beta"])
            rollout = self.rng.randint(0, 100)
        if op == "publish" or target is None:
            body, files = export_publish_body(export, self.project, channel=channel)
            upload_missing(c, self.project, files)
            resp = c.post("/api/v1/updates/publish", json=body)
            if resp.status_code == 201:
                with self.lock:
                    self.update_ids.extend(u["id"] for u in resp.json()["updates"])
        elif op == "rollback":
            resp = c.post(f"/api/v1/updates/{target}/rollback", json={})
        elif op == "rollout":
            resp = c.patch(f"/api/v1/updates/{target}", json={"rollout": rollout})
        else:
            resp = c.post(f"/api/v1/updates/{target}/promote", json={"channel": channel})
        with self.lock:
            self.answered += 1
        if resp.status_code >= 500:
            self.server_errors.append(f"{op}: {resp.status_code} {resp.text[:200]}")


def _check_database(engine: Engine) -> None:
    """Integrity of the file (SQLite) and of every foreign key (both backends)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
            assert conn.execute(text("PRAGMA foreign_key_check")).fetchall() == []
        metadata: MetaData = Base.metadata
        for table in metadata.sorted_tables:
            for fk in table.foreign_keys:
                child, parent = fk.parent, fk.column
                orphans = conn.execute(
                    text(
                        f"SELECT count(*) FROM {table.name} c "
                        f"WHERE c.{child.name} IS NOT NULL AND NOT EXISTS "
                        f"(SELECT 1 FROM {parent.table.name} p "
                        f"WHERE p.{parent.name} = c.{child.name})"
                    )
                ).scalar()
                assert orphans == 0, f"{table.name}.{child.name} -> {parent.table.name}"


def _check_updates_and_blobs(engine: Engine, store: FileBlobStore) -> int:
    """Visible updates complete and their blobs right; returns the number of updates."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT u.id, u.group_id, u.platform, u.kind, u.status, u.source_update_id, "
                "a.sha256, a.size, a.is_launch_asset FROM updates u "
                "LEFT JOIN update_assets a ON a.update_id = u.id"
            )
        ).fetchall()
        blob_sizes = dict(conn.execute(text("SELECT sha256, size FROM blobs")).fetchall())
    updates: dict[str, dict[str, Any]] = {}
    for uid, group, platform, kind, status, source, sha, size, launch in rows:
        u = updates.setdefault(uid, {"group": group, "platform": platform, "kind": kind,
                                     "status": status, "source": source, "assets": []})  # fmt: skip
        if sha is not None:
            u["assets"].append((sha, size, bool(launch)))
    groups: dict[str, set[str]] = {}
    checked: set[str] = set()
    for uid, u in updates.items():
        if u["kind"] != "update":
            continue
        launches = [a for a in u["assets"] if a[2]]
        assert len(launches) == 1, f"update {uid} has {len(launches)} launch assets"
        assert len(u["assets"]) == ASSETS_PER_UPDATE, f"update {uid} is incomplete"
        if u["source"] is None:
            groups.setdefault(u["group"], set()).add(u["platform"])
        for sha, size, _ in u["assets"]:
            assert blob_sizes.get(sha) == size, f"blob row of {sha} missing or wrong size"
            if sha not in checked:
                data = store.read_bytes(sha)
                assert hashlib.sha256(data).hexdigest() == sha, f"blob {sha} is corrupt"
                checked.add(sha)
    for group, platforms in groups.items():
        assert platforms == PLATFORMS, f"group {group} is half-published: {platforms}"
    return len(updates)


def _check_blob_files(store: FileBlobStore, blob_rows: set[str]) -> None:
    """Every file under a final name is whole: raw blobs re-hash, variants decompress."""
    for path in store.root.rglob("*"):
        if not path.is_file() or ".tmp" in path.parts:
            continue
        name = path.name
        sha, _, suffix = name.partition(".")
        data = path.read_bytes()
        if suffix == "":
            assert hashlib.sha256(data).hexdigest() == sha, f"partial blob {name}"
        elif suffix == "br":
            assert hashlib.sha256(brotli.decompress(data)).hexdigest() == sha, name
        elif suffix == "gzip":
            assert hashlib.sha256(gzip.decompress(data)).hexdigest() == sha, name
    for sha in blob_rows:
        assert store.exists(sha), f"blob row {sha} without its file"


def _retried_publish_is_served(server: ServerProcess, project: str, export: Path) -> None:
    with server.client() as c:
        body, files = export_publish_body(export, project, channel="retry")
        upload_missing(c, project, files)
        resp = c.post("/api/v1/updates/publish", json=body)
        assert resp.status_code == 201, resp.text
        served = {u["platform"]: u["id"] for u in resp.json()["updates"]}
    with server.anon() as anon:
        check = anon.post(
            "/api/v1/updates/check",
            json={
                "projectId": project,
                "channel": "retry",
                "platform": "ios",
                "runtimeVersion": "1",
            },
        )
        assert check.status_code == 200, check.text
        assert check.json()["manifest"]["id"] == served["ios"]


@dataclass
class LaneResult:
    """What one lane of kill rounds saw."""

    updates: int
    answered: int
    server_errors: list[str]


def _crash_rounds(target: Crashable, rounds: int, seed: int, root: Path) -> LaneResult:
    """``rounds`` times: load, SIGKILL at a random moment, restart, verify everything."""
    rng = random.Random(seed)
    exports = [make_export(root / f"e{i}", seed=f"crash-{seed}-{i}") for i in range(12)]
    server = target.start()
    with server.client() as c:
        project = create_project(c, "crash-app")["slug"]
    update_ids: list[str] = []
    engine = create_db_engine(target.database_url, pool_size=1)
    store = FileBlobStore(target.data_dir / "blobs")
    server_errors: list[str] = []
    answered = 0
    try:
        for round_no in range(rounds):
            workload = Workload(server, project, exports, rng, update_ids)
            stop = threading.Event()
            threads = [threading.Thread(target=workload.run, args=(stop,)) for _ in range(WORKERS)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.05, 0.5))
            server.kill()
            stop.set()
            for t in threads:
                t.join(timeout=30)
            server_errors += workload.server_errors
            answered += workload.answered
            server = target.start()
            with engine.connect() as conn:
                blob_rows = {r[0] for r in conn.execute(text("SELECT sha256 FROM blobs"))}
            _check_database(engine)
            _check_updates_and_blobs(engine, store)
            _check_blob_files(store, blob_rows)
            if round_no % 10 == 9 or round_no == rounds - 1:
                _retried_publish_is_served(server, project, rng.choice(exports))
        return LaneResult(_check_updates_and_blobs(engine, store), answered, server_errors)
    finally:
        engine.dispose()


@pytest.mark.slow
def test_sigkill_during_concurrent_writes_leaves_a_consistent_store(
    crashables: list[Crashable], tmp_path: Path
) -> None:
    seed = int(os.environ.get("LUMORA_CRASH_SEED", "20261126"))
    per_lane = -(-ROUNDS // LANES)  # ceil: at least ROUNDS kills in all
    with ThreadPoolExecutor(LANES) as pool:
        futures = [
            pool.submit(_crash_rounds, target, per_lane, seed + lane, tmp_path / f"lane{lane}")
            for lane, target in enumerate(crashables)
        ]
        results = [f.result() for f in futures]
    assert sum(t.restarts - 1 for t in crashables) >= ROUNDS
    assert [e for r in results for e in r.server_errors] == []
    for result in results:
        # The rounds did real work: requests were answered and publishes landed between kills.
        assert result.answered >= per_lane
        assert result.updates >= per_lane // 2
