"""Storage faults against real servers: a full disk during publish, an unreachable object
store. Nothing partial is kept, the API says which storage failed, the CLI says so in one
line, and devices keep getting the update published before."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from device_helpers import publish_small
from fault_helpers import CuttableProxy
from harness import ServerProcess, create_project, free_port, lumora_bin
from lumora_ota.store.outage import DependencyUnavailable


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace')}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _check(client: httpx.Client, project: str) -> str | None:
    body = {"projectId": project, "platform": "ios", "runtimeVersion": "1"}
    answer = client.post("/api/v1/updates/check", json=body).json()
    return answer["manifest"]["id"] if answer.get("updateAvailable") else None


def test_a_full_disk_during_publish(tiny_disk: Path, tmp_path: Path) -> None:
    srv = ServerProcess(
        data_dir=tiny_disk / "data",
        database_url=f"sqlite:///{tiny_disk / 'data' / 'lumora.db'}",
        extra_env={"LUMORA_LOG_LEVEL": "warning"},
    ).start()
    try:
        with srv.client() as admin, srv.anon() as device:
            create_project(admin, "full")
            older = publish_small(srv, "full", tmp_path / "small")["ios"]
            assert _check(device, "full") == older["id"]

            app = tmp_path / "big"
            app.mkdir()
            bundle = os.urandom(12 * 1024 * 1024)  # incompressible, larger than the disk
            (app / "main.js").write_bytes(bundle)
            env = {k: v for k, v in os.environ.items() if not k.startswith("LUMORA_")}
            env.update(
                LUMORA_SERVER=srv.url,
                LUMORA_API_KEY=srv.admin_key,
                XDG_CONFIG_HOME=str(tmp_path / "xdg"),
            )
            cli = subprocess.run(
                [
                    lumora_bin(), "publish", str(app), "--project", "full",
                    "--launch-asset", "main.js", "--platform", "ios", "--runtime-version", "1",
                    "--yes",
                ],
                env=env, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert cli.returncode != 0
            lines = cli.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), cli.stderr
            assert "out of space" in lines[0] and "blob store" in lines[0], lines[0]
            assert "Traceback" not in cli.stderr

            sha = hashlib.sha256(bundle).hexdigest()
            put = admin.put(f"/api/v1/assets/{sha}", params={"project": "full"}, content=bundle)
            assert put.status_code == 507, put.text
            assert put.headers["content-type"].startswith("application/problem+json")
            assert "blob store" in put.json()["detail"]

            # Nothing partial: no temporary file, no blob, no update; the older one served.
            blobs = tiny_disk / "data" / "blobs"
            assert not list((blobs / ".tmp").iterdir())
            assert not (blobs / sha[:2] / sha[2:4] / sha).exists()
            listed = admin.get("/api/v1/updates", params={"project": "full"}).json()["items"]
            assert {u["groupId"] for u in listed} == {older["groupId"]}
            assert _check(device, "full") == older["id"]
            # The space is there again for what fits.
            newer = publish_small(srv, "full", tmp_path / "small2")["ios"]
            assert _check(device, "full") == newer["id"]
    finally:
        srv.stop()


def test_an_unreachable_object_store_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 store's errors become ``DependencyUnavailable`` naming the bucket (503)."""
    from lumora_ota.store.s3 import S3BlobStore

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    dead = f"http://127.0.0.1:{free_port()}"
    store = S3BlobStore.from_url(f"s3://lumora-assets?endpoint={dead}")
    with pytest.raises(DependencyUnavailable) as caught:
        store.put_bytes("a" * 64, b"x")
    assert "the object store (S3 bucket lumora-assets)" in str(caught.value)

    async def chunks() -> object:
        yield b"x"

    sha = hashlib.sha256(b"x").hexdigest()
    with pytest.raises(DependencyUnavailable):
        asyncio.run(store.put_stream(sha, chunks(), max_bytes=10))  # type: ignore[arg-type]


def test_an_unreachable_object_store_answers_503_naming_it(seaweed: Any, tmp_path: Path) -> None:
    """A real server on S3 behind a proxy the test cuts: uploads get 503 problem+json naming
    the bucket, the CLI says the server is unavailable, devices keep their answers, and
    uploads work again once the store is back."""
    bucket = seaweed.new_bucket("outage")
    proxy = CuttableProxy(("127.0.0.1", seaweed.s3_port)).start()
    srv = ServerProcess(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'data' / 'lumora.db'}",
        storage_url=seaweed.storage_url(bucket, endpoint=f"http://127.0.0.1:{proxy.port}"),
        extra_env={**seaweed.aws_env, "LUMORA_LOG_LEVEL": "warning"},
    ).start()
    try:
        with srv.client() as admin, srv.anon(follow_redirects=False) as device:
            create_project(admin, "s3down")
            older = publish_small(srv, "s3down", tmp_path / "small")["ios"]
            proxy.cut()
            data = os.urandom(4096)
            sha = hashlib.sha256(data).hexdigest()
            put = admin.put(f"/api/v1/assets/{sha}", params={"project": "s3down"}, content=data)
            assert put.status_code == 503, put.text
            assert put.headers["content-type"].startswith("application/problem+json")
            assert f"the object store (S3 bucket {bucket})" in put.json()["detail"]
            assert int(put.headers["retry-after"]) >= 1
            assert _check(device, "s3down") == older["id"]  # manifests need no store

            proxy.restore()
            again = admin.put(f"/api/v1/assets/{sha}", params={"project": "s3down"}, content=data)
            assert again.status_code == 201, again.text
    finally:
        srv.stop()
        proxy.close()
