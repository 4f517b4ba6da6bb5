"""Publishing through the management API: missing hashes, streamed uploads, atomic publish."""

from __future__ import annotations

import gzip
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import brotli
import pytest

from harness import (
    ServerProcess,
    create_project,
    export_publish_body,
    make_export,
    publish_export,
    upload_missing,
)
from lumora_ota.store.variants import compress_variants, is_compressible

PNG_SHA = "24272cdaeff82cc5facdaccd982a6f05b60c4504704bbf94c19a6388659880bb"
PNG_B64 = "JCcs2u_4LMX6zazNmCpvBbYMRQRwS7-UwZpjiGWYgLs"
IOS_SHA = "e271a3b21811a03eb66319c90276415a5944cc206b411db343fd9e8bc8252fab"
IOS_B64 = "4nGjshgRoD62YxnJAnZBWllEzCBrQR2zQ_2ei8glL6s"
ANDROID_SHA = "b77916434d0b867e6a0861a134d331883fe97133bfe1dec8ff5ccedd2e4c7b99"
ANDROID_B64 = "t3kWQ00Lhn5qCGGhNNMxiD_pcTO_4d7I_1zO3S5Me5k"


def test_publish_real_expo_export(server: ServerProcess, unique: str, fixtures_dir: Path) -> None:
    export = fixtures_dir / "expo-export-1674170951"
    with server.client() as c:
        project = create_project(c, f"expo-{unique}")
        answer, sent = publish_export(c, project["slug"], export, message="first")
        assert sent > 0
        updates = {u["platform"]: u for u in answer["updates"]}
        assert set(updates) == {"ios", "android"}
        assert updates["ios"]["id"] != updates["android"]["id"]
        assert {u["groupId"] for u in updates.values()} == {answer["groupId"]}

        expected = {"ios": (IOS_SHA, IOS_B64), "android": (ANDROID_SHA, ANDROID_B64)}
        for platform, (bundle_sha, bundle_b64) in expected.items():
            update = updates[platform]
            assert update["runtimeVersion"] == "1"
            assert update["extra"]["expoClient"]["runtimeVersion"] == "1"
            assert update["manifestUrl"] == f"{server.url}/api/v1/manifests/{update['id']}"
            manifest = c.get(f"/api/v1/manifests/{update['id']}")
            assert manifest.status_code == 200
            body = manifest.json()
            assert body["id"] == update["id"]
            assert body["runtimeVersion"] == "1"
            assert body["launchAsset"]["hash"] == bundle_b64
            assert body["launchAsset"]["url"].endswith(f"/api/v1/assets/{bundle_sha}.js")
            assert [a["hash"] for a in body["assets"]] == [PNG_B64]
            assert body["assets"][0]["fileExtension"] == ".png"
            assert body["assets"][0]["contentType"] == "image/png"
            assert body["extra"]["expoClient"]["runtimeVersion"] == "1"
            assert update["launchAsset"]["sha256"] == bundle_sha
            assert (
                update["launchAsset"]["size"]
                == (export / update["launchAsset"]["key"]).stat().st_size
            )
            assert [a["sha256"] for a in update["assets"]] == [PNG_SHA]

        again, sent_again = publish_export(c, project["slug"], export, message="again")
        assert sent_again == 0
        assert {u["id"] for u in again["updates"]}.isdisjoint({u["id"] for u in updates.values()})


def test_missing_reports_only_unuploaded_hashes(
    server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    export = make_export(tmp_path / "e", seed=unique)
    _body, files = export_publish_body(export, f"miss-{unique}")
    with server.client() as c:
        create_project(c, f"miss-{unique}")
        hashes = list(files)
        first = c.post(
            "/api/v1/assets/missing", json={"project": f"miss-{unique}", "hashes": hashes}
        )
        assert sorted(first.json()["missing"]) == sorted(hashes)
        sha = hashes[0]
        put = c.put(
            f"/api/v1/assets/{sha}",
            params={"project": f"miss-{unique}"},
            content=files[sha].read_bytes(),
        )
        assert put.status_code == 201
        assert put.json() == {"sha256": sha, "size": files[sha].stat().st_size, "created": True}
        again = c.put(
            f"/api/v1/assets/{sha}",
            params={"project": f"miss-{unique}"},
            content=files[sha].read_bytes(),
        )
        assert again.status_code == 200 and again.json()["created"] is False
        after = c.post(
            "/api/v1/assets/missing", json={"project": f"miss-{unique}", "hashes": hashes}
        )
        assert sorted(after.json()["missing"]) == sorted(hashes[1:])


def test_uploads_are_per_project(server: ServerProcess, unique: str, tmp_path: Path) -> None:
    """Project B cannot reference a blob only project A uploaded (no probing by hash)."""
    export = make_export(tmp_path / "e", seed=unique)
    with server.client() as c:
        create_project(c, f"pa-{unique}")
        create_project(c, f"pb-{unique}")
        publish_export(c, f"pa-{unique}", export)
        body, files = export_publish_body(export, f"pb-{unique}")
        missing = c.post(
            "/api/v1/assets/missing", json={"project": f"pb-{unique}", "hashes": list(files)}
        ).json()["missing"]
        assert sorted(missing) == sorted(files)
        resp = c.post("/api/v1/updates/publish", json=body)
        assert resp.status_code == 409
        assert sorted(resp.json()["missing"]) == sorted(files)
        # Uploading the same bytes for B is accepted (the blob is stored once).
        upload_missing(c, f"pb-{unique}", files)
        assert c.post("/api/v1/updates/publish", json=body).status_code == 201


def test_publish_without_uploads_is_409_and_creates_nothing(
    server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    export = make_export(tmp_path / "e", seed=unique)
    body, files = export_publish_body(export, f"nup-{unique}", channel="brand-new")
    with server.client() as c:
        create_project(c, f"nup-{unique}")
        resp = c.post("/api/v1/updates/publish", json=body)
        assert resp.status_code == 409
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert sorted(resp.json()["missing"]) == sorted(files)
        listed = c.get("/api/v1/updates", params={"project": f"nup-{unique}"}).json()
        assert listed["items"] == []
        channels = c.get(f"/api/v1/projects/nup-{unique}").json()["channels"]
        assert "brand-new" not in channels


def test_publish_creates_channel_on_demand_and_web_platform(
    server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    export = make_export(tmp_path / "e", seed=unique, platforms=("ios", "android", "web"))
    with server.client() as c:
        create_project(c, f"web-{unique}")
        answer, _ = publish_export(
            c, f"web-{unique}", export, channel="beta.2", runtime_version="2.0.0", rollout=25
        )
        assert {u["platform"] for u in answer["updates"]} == {"ios", "android", "web"}
        assert all(u["channel"] == "beta.2" for u in answer["updates"])
        assert all(u["rollout"] == 25 and u["status"] == "active" for u in answer["updates"])
        assert all(u["kind"] == "update" for u in answer["updates"])
        assert "beta.2" in c.get(f"/api/v1/projects/web-{unique}").json()["channels"]


def test_same_bundle_key_dedup_across_platforms(
    server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    """Assets shared by the platforms are uploaded once."""
    export = make_export(tmp_path / "e", seed=unique, n_assets=3)
    with server.client() as c:
        create_project(c, f"dd-{unique}")
        _body, files = export_publish_body(export, f"dd-{unique}")
        sent = upload_missing(c, f"dd-{unique}", files)
        assert sent == sum(p.stat().st_size for p in files.values())
        assert len(files) == 3 + 2


def test_upload_streams_large_file(server: ServerProcess, unique: str) -> None:
    data = hashlib.sha256(unique.encode()).digest() * (3 * 1024 * 1024 // 32 + 7)
    sha = hashlib.sha256(data).hexdigest()

    def chunks():
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    with server.client() as c:
        create_project(c, f"big-{unique}")
        resp = c.put(f"/api/v1/assets/{sha}", params={"project": f"big-{unique}"}, content=chunks())
        assert resp.status_code == 201, resp.text
        assert resp.json()["size"] == len(data)
        missing = c.post(
            "/api/v1/assets/missing", json={"project": f"big-{unique}", "hashes": [sha]}
        )
        assert missing.json()["missing"] == []


def test_compressed_variants_are_precomputed(
    server: ServerProcess, unique: str, fixtures_dir: Path
) -> None:
    """After a publish, the bundles get br and gzip variants; the PNG does not."""
    blob_root = server.data_dir / "blobs"
    if not blob_root.is_dir():
        pytest.skip("blobs are not on the local file system")
    export = fixtures_dir / "expo-export-1674170951"
    with server.client() as c:
        create_project(c, f"var-{unique}")
        publish_export(c, f"var-{unique}", export)

    def variant(sha: str, name: str) -> Path:
        return blob_root / sha[:2] / sha[2:4] / f"{sha}.{name}"

    deadline = time.monotonic() + 60
    while not all(variant(IOS_SHA, v).exists() for v in ("br", "gzip")):
        assert time.monotonic() < deadline, "variants were not computed"
        time.sleep(0.1)
    original = (export / "bundles/ios-9d01842d6ee1224f7188971c5d397115.js").read_bytes()
    assert brotli.decompress(variant(IOS_SHA, "br").read_bytes()) == original
    assert gzip.decompress(variant(IOS_SHA, "gzip").read_bytes()) == original
    assert not variant(PNG_SHA, "br").exists()


def test_variant_rules_unit() -> None:
    assert is_compressible("application/javascript", ".js")
    assert is_compressible("application/octet-stream", ".hbc")
    assert is_compressible("text/plain; charset=utf-8", "")
    assert is_compressible("font/ttf", ".ttf")
    assert not is_compressible("image/png", ".png")
    assert not is_compressible("font/woff2", ".woff2")
    assert not is_compressible("image/jpeg", ".jpg")
    text_data = b"function hello() { return 42; }\n" * 500
    variants = compress_variants(text_data)
    assert set(variants) == {"br", "gzip"}
    assert len(variants["br"]) < len(text_data) * 0.95
    assert compress_variants(os.urandom(4096)) == {}


def test_concurrent_uploads_and_publishes(
    server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    """Two publishers racing: same blob uploaded at once, same new channel created at once."""
    slug = f"race-{unique}"
    export = make_export(tmp_path / "e", seed=unique)
    body, files = export_publish_body(export, slug, channel=f"race-{unique}")
    sha, path = next(iter(files.items()))
    data = path.read_bytes()
    with server.client() as c:
        create_project(c, slug)

    def put(_: int) -> int:
        with server.client() as c:
            url = f"/api/v1/assets/{sha}"
            return c.put(url, params={"project": slug}, content=data).status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(put, range(4)))
    assert set(statuses) <= {200, 201} and 201 in statuses

    with server.client() as c:
        upload_missing(c, slug, files)

    def publish(_: int) -> int:
        with server.client() as c:
            return c.post("/api/v1/updates/publish", json=body).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(publish, range(4))) == [201] * 4
    with server.client() as c:
        channels = c.get(f"/api/v1/projects/{slug}").json()["channels"]
        assert channels.count(f"race-{unique}") == 1
        listed = c.get("/api/v1/updates", params={"project": slug}).json()["items"]
        assert len(listed) == 8
