"""``store.digests``: the server computes every blob's md5 (the manifest key) itself."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import Engine, select

from lumora_ota.domain.manifest import build_manifest
from lumora_ota.store import repository
from lumora_ota.store.blobs import FileBlobStore
from lumora_ota.store.db import make_session_factory
from lumora_ota.store.digests import Md5Tap, fill_missing_md5
from lumora_ota.store.models import Blob, DeliveryState, UpdateAsset


def test_md5_tap_passes_chunks_through_and_hashes_them() -> None:
    async def body() -> AsyncIterator[bytes]:
        for chunk in (b"ab", b"", b"cd"):
            yield chunk

    async def run() -> tuple[bytes, str]:
        tap = Md5Tap(body())
        data = b"".join([c async for c in tap.chunks()])
        return data, tap.hexdigest()

    data, md5 = asyncio.run(run())
    assert data == b"abcd" and md5 == hashlib.md5(b"abcd").hexdigest()


def _publish(engine: Engine, blobs: FileBlobStore, files: dict[str, bytes], slug: str) -> str:
    sessions = make_session_factory(engine)
    with sessions() as session:
        project = repository.create_project(session, name=slug, slug=slug)
        specs = []
        for key, data in files.items():
            sha = hashlib.sha256(data).hexdigest()
            blobs.put_bytes(sha, data)
            repository.record_blob(session, project.id, sha, len(data))  # no md5: legacy
            specs.append(repository.AssetSpec(key, sha, "image/png", ".png"))
        spec = repository.PublishSpec(
            project_id=project.id,
            channel="production",
            runtime_version="1",
            platforms={"ios": repository.PlatformSpec(specs[0], tuple(specs[1:]))},
        )
        update_id = repository.publish(session, spec)[0].id
        session.commit()
    return update_id


def test_fill_missing_md5_fixes_blobs_and_stored_updates(
    store_engine: Engine, tmp_path: Path, unique: str
) -> None:
    blobs = FileBlobStore(tmp_path / "blobs")
    files = {"main.js": b"bundle " + unique.encode(), "a.png": b"png " + unique.encode()}
    files["copy.png"] = files["a.png"]  # same bytes under two paths
    update_id = _publish(store_engine, blobs, files, f"dg-{unique}")
    sessions = make_session_factory(store_engine)
    with sessions() as session:
        revision = session.get(DeliveryState, 1).revision  # type: ignore[union-attr]
    with store_engine.begin() as conn:
        assert fill_missing_md5(conn, blobs, [hashlib.sha256(b"unknown").hexdigest()]) == 0
        assert fill_missing_md5(conn, blobs) >= 3
        assert fill_missing_md5(conn, blobs) == 0  # idempotent
    with sessions() as session:
        assert session.get(DeliveryState, 1).revision > revision  # type: ignore[union-attr]
        rows = session.scalars(select(UpdateAsset).where(UpdateAsset.update_id == update_id))
        assert {r.key: r.md5 for r in rows} == {
            k: hashlib.md5(v).hexdigest() for k, v in files.items()
        }
        update = repository.get_update(session, update_id)
        assert update is not None
        manifest = build_manifest(repository.to_record(update), "http://x")
    keys = [a["key"] for a in manifest["assets"]]
    assert keys == [hashlib.md5(files["a.png"]).hexdigest()]  # one entry per key
    assert manifest["launchAsset"]["key"] == hashlib.md5(files["main.js"]).hexdigest()


def test_a_publish_fills_only_its_blobs(store_engine: Engine, tmp_path: Path, unique: str) -> None:
    blobs = FileBlobStore(tmp_path / "blobs")
    data = b"lonely " + unique.encode()
    sha = hashlib.sha256(data).hexdigest()
    blobs.put_bytes(sha, data)
    with make_session_factory(store_engine)() as session:
        project = repository.create_project(session, name=unique, slug=f"dp-{unique}")
        repository.record_blob(session, project.id, sha, len(data))
        session.commit()
    with store_engine.begin() as conn:
        assert fill_missing_md5(conn, blobs, [sha]) == 0  # no asset row yet
        assert conn.execute(select(Blob.md5).where(Blob.sha256 == sha)).scalar() == (
            hashlib.md5(data).hexdigest()
        )


def test_a_blob_missing_from_the_store_keeps_its_key(
    store_engine: Engine, tmp_path: Path, unique: str
) -> None:
    blobs = FileBlobStore(tmp_path / "blobs")
    update_id = _publish(
        store_engine, blobs, {"main.js": b"gone " + unique.encode()}, f"dm-{unique}"
    )
    sha = hashlib.sha256(b"gone " + unique.encode()).hexdigest()
    blobs.delete(sha)
    with store_engine.begin() as conn:
        fill_missing_md5(conn, blobs, [sha])
    with make_session_factory(store_engine)() as session:
        update = repository.get_update(session, update_id)
        assert update is not None
        manifest = build_manifest(repository.to_record(update), "http://x")
    assert manifest["launchAsset"]["key"] == sha[:32]
