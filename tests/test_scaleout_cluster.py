"""Several server processes over one PostgreSQL database and one SeaweedFS bucket act as one.

* a publish, rollout change or rollback made through one process is served by another
  within 1 s, and the asset URLs of its manifest fetch the right bytes straight from the
  store (302 to a pre-signed URL);
* statistics counted by different processes add up;
* killing one of two processes under load leaves the other serving without errors;
* three processes started at once on a fresh database migrate it safely.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import create_engine, text

from conftest import BACKENDS, ServerFactory
from harness import (
    ServerProcess,
    create_pg_database,
    create_project,
    drop_pg_database,
    make_export,
    publish_export,
)
from s3_harness import SeaweedServer

pytestmark = [
    pytest.mark.s3,
    pytest.mark.skipif(
        "postgres" not in BACKENDS, reason="the cluster runs on PostgreSQL (LUMORA_TEST_BACKENDS)"
    ),
]

PROPAGATION_BOUND = 1.0  # seconds: what the issue promises for a change made elsewhere


def b64url_sha256(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def check(server: ServerProcess, slug: str, device: str = "device-1") -> dict[str, Any]:
    """The Lumora check answer for an iOS device on runtime 1 of ``slug``."""
    with server.anon() as client:
        resp = client.post(
            "/api/v1/updates/check",
            json={
                "projectId": slug,
                "channel": "production",
                "platform": "ios",
                "runtimeVersion": "1",
                "deviceId": device,
            },
        )
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


def served_update_id(server: ServerProcess, slug: str) -> str | None:
    answer = check(server, slug)
    return answer["manifest"]["id"] if answer.get("manifest") else None


def wait_until(predicate: Callable[[], bool], *, within: float) -> float:
    """Poll ``predicate`` until it holds; returns the seconds it took, fails past ``within``."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        elapsed = time.monotonic() - started
        assert elapsed <= within, f"not seen within {within}s"
        time.sleep(0.02)


def ios_update_id(answer: dict[str, Any]) -> str:
    return next(u["id"] for u in answer["updates"] if u["platform"] == "ios")


def fetch_from_store(
    server: ServerProcess, url: str, seaweed: SeaweedServer, **headers: str
) -> httpx.Response:
    """Follow an asset URL of a manifest by hand: it must redirect to the store."""
    with httpx.Client(timeout=30) as client:
        first = client.get(url, headers=headers)
        assert first.status_code == 302, (first.status_code, first.text)
        location = first.headers["location"]
        assert location.startswith(seaweed.endpoint + "/"), location
        assert first.headers["cache-control"].startswith("private, max-age=")
        vary = {v.strip().lower() for v in first.headers["vary"].split(",")}
        assert "accept-encoding" in vary
        final = client.get(location, headers=headers)
    assert final.status_code == 200, final.text
    return final


@pytest.fixture(scope="module")
def cluster_db() -> Iterator[str]:
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="module")
def cluster_storage(seaweed: SeaweedServer) -> str:
    return seaweed.storage_url(seaweed.new_bucket("cluster"))


@pytest.fixture(scope="module")
def pair(
    server_factory: ServerFactory, seaweed: SeaweedServer, cluster_db: str, cluster_storage: str
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two processes sharing the database and the bucket."""
    servers = tuple(
        server_factory(
            "postgres",
            database_url=cluster_db,
            storage_url=cluster_storage,
            extra_env=seaweed.aws_env,
        )
        for _ in range(2)
    )
    yield servers  # type: ignore[misc]
    for srv in servers:
        srv.stop()


@pytest.fixture
def slug(pair: tuple[ServerProcess, ServerProcess], unique: str) -> str:
    with pair[0].client() as client:
        create_project(client, f"cluster-{unique}")
    return f"cluster-{unique}"


def test_publish_through_one_is_served_by_the_other(
    pair: tuple[ServerProcess, ServerProcess], seaweed: SeaweedServer, slug: str, tmp_path: Path
) -> None:
    a, b = pair
    assert served_update_id(b, slug) is None
    with a.client() as client:
        answer, _ = publish_export(client, slug, make_export(tmp_path / "v1", seed=slug))
    update_id = ios_update_id(answer)
    wait_until(lambda: served_update_id(b, slug) == update_id, within=PROPAGATION_BOUND)

    manifest = check(b, slug)["manifest"]
    for asset in [manifest["launchAsset"], *manifest["assets"]]:
        resp = fetch_from_store(b, asset["url"], seaweed, **{"accept-encoding": "identity"})
        assert b64url_sha256(resp.content) == asset["hash"]
        assert resp.headers["content-type"] == asset["contentType"]
        # HEAD moves no bytes, so the app answers it itself (a pre-signed GET refuses HEAD).
        head = httpx.head(asset["url"], headers={"accept-encoding": "identity"})
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(resp.content))


def test_compressed_variants_are_served_from_the_store(
    pair: tuple[ServerProcess, ServerProcess],
    seaweed: SeaweedServer,
    cluster_storage: str,
    slug: str,
    tmp_path: Path,
) -> None:
    a, b = pair
    with a.client() as client:
        answer, _ = publish_export(client, slug, make_export(tmp_path / "v1", seed=slug))
    launch = wait_for_manifest(b, slug, ios_update_id(answer))["launchAsset"]
    # Variants are computed after the commit, in the background: wait for the object
    # before any process is asked for it (an absent variant is remembered for a while).
    s3, bucket = seaweed.client(), urlsplit(cluster_storage).netloc
    wait_until(lambda: object_exists(s3, bucket, f"{launch['sha256']}.br"), within=30)
    resp = fetch_from_store(b, launch["url"], seaweed, **{"accept-encoding": "br"})
    assert resp.headers["content-encoding"] == "br"
    assert parse_qs(urlsplit(str(resp.url)).query)["response-content-encoding"] == ["br"]
    assert b64url_sha256(resp.content) == launch["hash"]  # decoded by httpx


def test_rollout_change_and_rollback_reach_the_other_process(
    pair: tuple[ServerProcess, ServerProcess], slug: str, tmp_path: Path
) -> None:
    a, b = pair
    with a.client() as client:
        first = ios_update_id(
            publish_export(client, slug, make_export(tmp_path / "v1", seed="one"))[0]
        )
        second = ios_update_id(
            publish_export(client, slug, make_export(tmp_path / "v2", seed="two"))[0]
        )
        wait_until(lambda: served_update_id(b, slug) == second, within=PROPAGATION_BOUND)

        assert client.patch(f"/api/v1/updates/{second}", json={"rollout": 0}).status_code == 200
        wait_until(lambda: served_update_id(b, slug) == first, within=PROPAGATION_BOUND)

        assert client.patch(f"/api/v1/updates/{second}", json={"rollout": 100}).status_code == 200
        wait_until(lambda: served_update_id(b, slug) == second, within=PROPAGATION_BOUND)

        resp = client.post(f"/api/v1/updates/{second}/rollback", json={})
        assert resp.status_code in (200, 201), resp.text
        wait_until(lambda: served_update_id(b, slug) != second, within=PROPAGATION_BOUND)


def test_statistics_from_both_processes_add_up(
    pair: tuple[ServerProcess, ServerProcess], slug: str, tmp_path: Path
) -> None:
    a, b = pair
    with a.client() as client:
        publish_export(client, slug, make_export(tmp_path / "v1", seed=slug))
    for server, n in ((a, 3), (b, 4)):
        for i in range(n):
            check(server, slug, device=f"stats-{i}")

    def total_checks() -> int:
        with a.client() as client:
            resp = client.get("/api/v1/stats", params={"project": slug})
        assert resp.status_code == 200, resp.text
        return int(resp.json()["totals"]["checks"])

    # Each process flushes its counters every 0.2 s (harness setting).
    wait_until(lambda: total_checks() == 7, within=10)


def test_killing_one_of_two_under_load_leaves_the_other_serving(
    pair: tuple[ServerProcess, ServerProcess],
    server_factory: ServerFactory,
    seaweed: SeaweedServer,
    cluster_db: str,
    cluster_storage: str,
    slug: str,
    tmp_path: Path,
) -> None:
    survivor = pair[1]
    victim = server_factory(
        "postgres", database_url=cluster_db, storage_url=cluster_storage, extra_env=seaweed.aws_env
    )
    with pair[0].client() as client:
        update_id = ios_update_id(
            publish_export(client, slug, make_export(tmp_path / "v1", seed=slug))[0]
        )
    for srv in (survivor, victim):
        wait_until(lambda srv=srv: served_update_id(srv, slug) == update_id, within=5)  # type: ignore[misc]

    total, kill_after = 300, 100
    killed = threading.Event()
    lock = threading.Lock()
    outcomes: dict[str, list[str]] = {"survivor": [], "victim": []}
    # One pooled client per process, shared by the threads, as a load balancer would keep.
    clients = {
        "survivor": httpx.Client(base_url=survivor.url, timeout=10),
        "victim": httpx.Client(base_url=victim.url, timeout=10),
    }

    def one(i: int) -> None:
        name = "survivor" if i % 2 == 0 else "victim"
        try:
            resp = clients[name].post(
                "/api/v1/updates/check",
                json={
                    "projectId": slug,
                    "platform": "ios",
                    "runtimeVersion": "1",
                    "deviceId": f"load-{i}",
                },
            )
            ok = resp.status_code == 200 and resp.json()["manifest"]["id"] == update_id
            outcome = "ok" if ok else f"bad {resp.status_code}"
        except httpx.TransportError as exc:
            outcome = f"transport {type(exc).__name__}"
        with lock:
            outcomes[name].append(outcome)
            if len(outcomes["survivor"]) + len(outcomes["victim"]) >= kill_after:
                killed.set()

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(one, i) for i in range(total)]
        assert killed.wait(120)
        victim.kill()
        for future in futures:
            future.result()
    for client in clients.values():
        client.close()

    assert outcomes["survivor"] == ["ok"] * (total // 2)
    # The victim answered right until it died; after that only connections failed.
    assert all(o == "ok" or o.startswith("transport") for o in outcomes["victim"])
    assert outcomes["victim"].count("ok") >= 1
    assert served_update_id(survivor, slug) == update_id


def test_three_processes_start_at_once_on_a_fresh_database(
    seaweed: SeaweedServer, tmp_path: Path, unique: str
) -> None:
    database = create_pg_database()
    storage = seaweed.storage_url(f"lumora-fresh-{unique}")  # created by the first to need it
    cdn = "https://cdn.example.test/ota/assets"
    servers = [
        ServerProcess(
            data_dir=tmp_path / f"srv{i}",
            database_url=database,
            storage_url=storage,
            extra_env=seaweed.aws_env,
            extra_args=extra,
        )
        for i, extra in enumerate([[], [], ["--asset-base-url", cdn]])
    ]
    try:
        # Three interpreters importing at once on a busy machine start slowly: be patient.
        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(lambda srv: srv.start(timeout=120), servers))
        for srv in servers:
            body = srv.client().get("/health").json()
            checks = {c["name"]: c for c in body["checks"]}
            assert body["status"] == "ok"
            assert checks["database"] == {**checks["database"], "status": "ok"}
            assert checks["database"]["backend"] == "postgresql"
            assert checks["blobStore"]["status"] == "ok"
            assert checks["blobStore"]["backend"] == "S3BlobStore"
        engine = create_engine(database.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        engine.dispose()
        assert len(versions) == 1

        # The process configured with a CDN base lists asset URLs under it.
        with servers[0].client() as client:
            create_project(client, f"fresh-{unique}")
            publish_export(client, f"fresh-{unique}", make_export(tmp_path / "v1", seed=unique))
        manifest = wait_for_manifest(servers[2], f"fresh-{unique}")
        assert manifest["launchAsset"]["url"].startswith(cdn + "/")
        assert all(a["url"].startswith(cdn + "/") for a in manifest["assets"])
    finally:
        for srv in servers:
            srv.stop()
        drop_pg_database(database)


# ---------------------------------------------------------------- small helpers


def wait_for_manifest(
    server: ServerProcess, slug: str, update_id: str | None = None
) -> dict[str, Any]:
    """The manifest ``server`` serves for ``slug`` once it serves one (``update_id`` if given)."""

    def served() -> bool:
        current = served_update_id(server, slug)
        return current is not None and (update_id is None or current == update_id)

    wait_until(served, within=PROPAGATION_BOUND)
    manifest: dict[str, Any] = check(server, slug)["manifest"]
    return manifest


def object_exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return True
