"""Atomic publishing: a server killed right before the publish commits leaves no visible
update and an intact database; an upload cut off mid-stream leaves no blob under its final
name and is still reported missing."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from fault_helpers import fault_env
from harness import (
    ServerProcess,
    create_project,
    export_publish_body,
    make_export,
    upload_missing,
)
from lumora_ota.store.db import create_db_engine


def _backend(server: ServerProcess) -> str:
    return "sqlite" if server.database_url.startswith("sqlite") else "postgres"


def _wait_until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def _integrity_ok(database_url: str) -> None:
    engine = create_db_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
                assert conn.execute(text("PRAGMA foreign_key_check")).fetchall() == []
            orphans = conn.execute(
                text(
                    "SELECT count(*) FROM update_assets ua "
                    "LEFT JOIN blobs b ON b.sha256 = ua.sha256 WHERE b.sha256 IS NULL"
                )
            ).scalar()
            assert orphans == 0
    finally:
        engine.dispose()


def test_crash_before_commit_leaves_no_update(
    server: ServerProcess, server_factory: Any, unique: str, tmp_path: Path
) -> None:
    backend = _backend(server)
    crashing = server_factory(backend, extra_env=fault_env("publish-before-commit"))
    slug = f"crash-{unique}"
    body, files = export_publish_body(
        make_export(tmp_path / "e", seed=unique), slug, channel="crash-channel"
    )
    with crashing.client() as c:
        create_project(c, slug)
        assert upload_missing(c, slug, files) > 0
        with pytest.raises(httpx.TransportError):
            c.post("/api/v1/updates/publish", json=body)
    crashing.kill()

    restarted = server_factory(
        backend,
        data_dir=crashing.data_dir,
        database_url=crashing.database_url,
        storage_url=crashing.storage_url,  # the same blobs (its own bucket on S3)
        admin_key=crashing.admin_key,
    )
    _integrity_ok(crashing.database_url)
    with restarted.client() as c:
        assert c.get("/api/v1/updates", params={"project": slug}).json()["items"] == []
        assert "crash-channel" not in c.get(f"/api/v1/projects/{slug}").json()["channels"]
        # The uploads committed before the crash are kept: nothing to upload again.
        missing = c.post("/api/v1/assets/missing", json={"project": slug, "hashes": list(files)})
        assert missing.json()["missing"] == []
        retried = c.post("/api/v1/updates/publish", json=body)
        assert retried.status_code == 201
        ids = {u["id"] for u in retried.json()["updates"]}
        listed = c.get("/api/v1/updates", params={"project": slug}).json()["items"]
        assert {u["id"] for u in listed} == ids
        for update_id in ids:
            assert c.get(f"/api/v1/manifests/{update_id}").status_code == 200
    restarted.stop()


def _send_partial_upload(server: ServerProcess, project: str, sha: str, data: bytes) -> None:
    """Send the headers and part of the body of a PUT, then drop the connection."""
    head = (
        f"PUT /api/v1/assets/{sha}?project={project} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {server.admin_key}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + data[: len(data) // 3])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    # SO_LINGER 0: the close resets the connection, as a crashed publisher's would.


def test_interrupted_upload_leaves_no_blob(server: ServerProcess, unique: str) -> None:
    slug = f"cut-{unique}"
    data = hashlib.sha256(unique.encode()).digest() * (64 * 1024)  # 2 MiB
    sha = hashlib.sha256(data).hexdigest()
    final = server.data_dir / "blobs" / sha[:2] / sha[2:4] / sha
    tmp_dir = server.data_dir / "blobs" / ".tmp"
    with server.client() as c:
        create_project(c, slug)
        _send_partial_upload(server, slug, sha, data)

        def cleaned_up() -> bool:
            with contextlib.suppress(FileNotFoundError):
                return not any(p.name.startswith("up-") for p in tmp_dir.iterdir())
            return True

        if tmp_dir.is_dir():
            _wait_until(cleaned_up)
            assert not final.exists()
        missing = c.post("/api/v1/assets/missing", json={"project": slug, "hashes": [sha]})
        assert missing.json()["missing"] == [sha]
        # A complete retry works.
        resp = c.put(f"/api/v1/assets/{sha}", params={"project": slug}, content=data)
        assert resp.status_code == 201
        assert (
            c.post("/api/v1/assets/missing", json={"project": slug, "hashes": [sha]}).json()[
                "missing"
            ]
            == []
        )
