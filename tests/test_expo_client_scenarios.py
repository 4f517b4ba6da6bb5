"""Delivery scenarios driven through the expo-updates client model against a real server.

Each test asserts what a real device ends up running (its JS bundle bytes) and whether the
images and fonts of the export resolve the way expo-asset looks them up (by md5), after the
server-side action a user takes: publish, newer publish, rollback in every form, promote,
rollout edits and pauses, channels, runtime ranges and code signing. The fixtures are the
SDK 58 exports (Hermes bundles, a font, images) and the older SDK 47 ones.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from cryptography import x509

from conftest import BACKENDS
from delta_helpers import wait_for_patch
from device_helpers import new_project
from expo_client_model import CodeSigning, Device, EmbeddedBuild, run_update_cycle
from harness import ServerProcess, create_project, publish_dir, publish_export
from lumora_ota.store.db import alembic_config, create_db_engine

BUILD_TIME = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def project(server: ServerProcess, unique: str) -> str:
    return new_project(server, unique, "model")


@pytest.fixture
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture
def anon(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.anon() as client:
        yield client


def manifest_url(server: ServerProcess, project: str) -> str:
    return f"{server.url}/api/v1/expo/{project}/manifest"


def publish(
    admin: httpx.Client, project: str, export: Path, rv: str = "1.0.0", **options: Any
) -> dict[str, dict[str, Any]]:
    answer, _ = publish_export(admin, project, export, runtime_version=rv, **options)
    return {u["platform"]: u for u in answer["updates"]}


def export_bundle(export: Path, platform: str) -> bytes:
    meta = json.loads((export / "metadata.json").read_text())["fileMetadata"][platform]
    return (export / meta["bundle"]).read_bytes()


def export_assets(export: Path, platform: str) -> dict[str, bytes]:
    """The export's images and fonts by Metro hash (the file name under ``assets/``)."""
    meta = json.loads((export / "metadata.json").read_text())["fileMetadata"][platform]
    return {Path(a["path"]).name: (export / a["path"]).read_bytes() for a in meta["assets"]}


def fresh_export(export: Path, tmp_path: Path) -> Path:
    """A copy of ``export`` (in the test's tmp dir) whose bundles are bytes the server has
    never seen, so nothing about them is precomputed."""
    copy = tmp_path / f"fresh-{uuid.uuid4().hex}"
    shutil.copytree(export, copy)
    meta = json.loads((copy / "metadata.json").read_text())["fileMetadata"]
    for spec in meta.values():
        bundle = copy / spec["bundle"]
        bundle.write_bytes(bundle.read_bytes() + uuid.uuid4().hex.encode())
    return copy


def bare_build(rv: str = "1.0.0") -> EmbeddedBuild:
    """A binary whose embedded update has a bundle of its own and no images or fonts, so
    every asset an update brings is new to it."""
    return EmbeddedBuild(rv, BUILD_TIME, {"embedded-bundle": b"// embedded"})


def device(rv: str = "1.0.0", **options: Any) -> Device:
    return Device(bare_build(rv), **options)


def cycle(dev: Device, anon: httpx.Client, url: str) -> str:
    return run_update_cycle(dev, anon, url)


# ---------------------------------------------------------------- assets


@pytest.mark.parametrize("platform", ["ios", "android"])
def test_every_asset_of_an_sdk58_update_resolves(
    server: ServerProcess,
    admin: httpx.Client,
    anon: httpx.Client,
    project: str,
    fixtures_dir: Path,
    platform: str,
) -> None:
    v1 = fixtures_dir / "expo-export-sdk58-v1"
    publish(admin, project, v1)
    dev = device(platform=platform)
    assert cycle(dev, anon, manifest_url(server, project)) == "downloaded"
    assert dev.launch_bytes() == export_bundle(v1, platform)
    for md5, data in export_assets(v1, platform).items():
        assert dev.resolve_asset(md5) == data, f"asset {md5} does not resolve"


def test_manifest_keys_are_md5_on_every_publish_path(
    server: ServerProcess, admin: httpx.Client, project: str, fixtures_dir: Path, tmp_path: Path
) -> None:
    old = fixtures_dir / "expo-export-1674170951"
    publish(admin, project, old, rv="1")
    plain = tmp_path / "plain"
    (plain / "img").mkdir(parents=True)
    (plain / "main.js").write_bytes(b"console.log('plain')")
    (plain / "img" / "logo.png").write_bytes(b"\x89PNG plain logo")
    publish_dir(admin, project, plain, launch="main.js", runtime_version="2")
    for rv, platform in (("1", "ios"), ("1", "android"), ("2", "ios")):
        with server.anon() as anon:
            resp = anon.get(
                f"/api/v1/expo/{project}/manifest",
                headers={
                    "expo-platform": platform,
                    "expo-runtime-version": rv,
                    "expo-protocol-version": "1",
                    "accept": "application/expo+json",
                },
            )
        manifest = resp.json()
        for asset in [manifest["launchAsset"], *manifest["assets"]]:
            data = anon_get(server, asset["url"])
            assert asset["key"] == hashlib.md5(data).hexdigest(), asset


def anon_get(server: ServerProcess, url: str) -> bytes:
    with server.anon() as anon:
        resp = anon.get(url)
    assert resp.status_code == 200
    return resp.content


def test_a_newer_publish_reuses_assets_and_they_still_resolve(
    server: ServerProcess,
    admin: httpx.Client,
    anon: httpx.Client,
    project: str,
    fixtures_dir: Path,
) -> None:
    v1, v2 = fixtures_dir / "expo-export-sdk58-v1", fixtures_dir / "expo-export-sdk58-v2"
    url = manifest_url(server, project)
    publish(admin, project, v1)
    dev = device()
    cycle(dev, anon, url)
    publish(admin, project, v2)
    assert cycle(dev, anon, url) == "downloaded"
    assert dev.launch_bytes() == export_bundle(v2, "ios")
    assert all(dev.resolve_asset(m) == d for m, d in export_assets(v2, "ios").items())
    assert cycle(dev, anon, url) == "nothing"


# ---------------------------------------------------------------- moving devices back


@pytest.fixture
def on_v2(
    server: ServerProcess, admin: httpx.Client, anon: httpx.Client, project: str, fixtures_dir: Path
) -> tuple[Device, dict[str, Any], dict[str, Any]]:
    """A device running v2 of the SDK 58 app, with v1 published before it."""
    url = manifest_url(server, project)
    v1 = publish(admin, project, fixtures_dir / "expo-export-sdk58-v1")
    dev = device()
    cycle(dev, anon, url)
    v2 = publish(admin, project, fixtures_dir / "expo-export-sdk58-v2")
    cycle(dev, anon, url)
    assert dev.running_id == v2["ios"]["id"]
    return dev, v1["ios"], v2["ios"]


def test_default_rollback_moves_devices_running_the_bad_update(
    server: ServerProcess,
    admin: httpx.Client,
    anon: httpx.Client,
    project: str,
    fixtures_dir: Path,
    on_v2: tuple[Device, dict[str, Any], dict[str, Any]],
) -> None:
    dev, _, v2 = on_v2
    resp = admin.post(f"/api/v1/updates/{v2['id']}/rollback", json={})
    assert resp.status_code == 200, resp.text
    assert cycle(dev, anon, manifest_url(server, project)) == "downloaded"
    assert dev.launch_bytes() == export_bundle(fixtures_dir / "expo-export-sdk58-v1", "ios")
    assert dev.running_id != v2["id"]
    assert all(
        dev.resolve_asset(m) == d
        for m, d in export_assets(fixtures_dir / "expo-export-sdk58-v1", "ios").items()
    )


def test_rollback_to_a_chosen_update_moves_devices(
    server: ServerProcess,
    admin: httpx.Client,
    anon: httpx.Client,
    project: str,
    fixtures_dir: Path,
    on_v2: tuple[Device, dict[str, Any], dict[str, Any]],
) -> None:
    dev, v1, v2 = on_v2
    resp = admin.post(f"/api/v1/updates/{v2['id']}/rollback", json={"to": v1["id"]})
    assert resp.status_code == 201, resp.text
    assert cycle(dev, anon, manifest_url(server, project)) == "downloaded"
    assert dev.launch_bytes() == export_bundle(fixtures_dir / "expo-export-sdk58-v1", "ios")


def test_rollback_to_embedded_moves_devices(
    server: ServerProcess,
    admin: httpx.Client,
    anon: httpx.Client,
    project: str,
    on_v2: tuple[Device, dict[str, Any], dict[str, Any]],
) -> None:
    dev, _, v2 = on_v2
    resp = admin.post(f"/api/v1/updates/{v2['id']}/rollback", json={"toEmbedded": True})
    assert resp.status_code == 201, resp.text
    assert cycle(dev, anon, manifest_url(server, project)) == "rollBackToEmbedded"
    assert dev.launched is dev.embedded and dev.launch_bytes() == b"// embedded"


def test_default_rollback_of_the_only_update_returns_to_the_embedded_one(
    server: ServerProcess,
    admin: httpx.Client,
    anon: httpx.Client,
    project: str,
    fixtures_dir: Path,
) -> None:
    url = manifest_url(server, project)
    only = publish(admin, project, fixtures_dir / "expo-export-sdk58-v1")["ios"]
    dev = device()
    cycle(dev, anon, url)
    assert admin.post(f"/api/v1/updates/{only['id']}/rollback", json={}).status_code == 200
    assert cycle(dev, anon, url) == "rollBackToEmbedded"
    assert dev.launched is dev.embedded


def test_promoting_an_earlier_update_moves_devices(
    server: ServerProcess,
    admin: httpx.Client,
    anon: httpx.Client,
    project: str,
    fixtures_dir: Path,
) -> None:
    """Staging holds v1; production runs v2; promoting v1 from staging replaces v2."""
    url = manifest_url(server, project)
    v1 = fixtures_dir / "expo-export-sdk58-v1"
    staged = publish(admin, project, v1, channel="staging")["ios"]
    publish(admin, project, fixtures_dir / "expo-export-sdk58-v2")
    dev = device()
    cycle(dev, anon, url)
    resp = admin.post(f"/api/v1/updates/{staged['id']}/promote", json={"channel": "production"})
    assert resp.status_code == 201, resp.text
    assert cycle(dev, anon, url) == "downloaded"
    assert dev.launch_bytes() == export_bundle(v1, "ios")


def test_pausing_a_rollout_stops_spreading_but_devices_keep_the_update(
    server: ServerProcess,
    admin: httpx.Client,
    anon: httpx.Client,
    project: str,
    fixtures_dir: Path,
    on_v2: tuple[Device, dict[str, Any], dict[str, Any]],
) -> None:
    dev, v1, v2 = on_v2
    assert admin.patch(f"/api/v1/updates/{v2['id']}", json={"rollout": 0}).status_code == 200
    assert cycle(dev, anon, manifest_url(server, project)) in ("ignored", "nothing")
    assert dev.running_id == v2["id"]  # as in EAS: a pause does not take it back
    fresh = device()
    cycle(fresh, anon, manifest_url(server, project))
    assert fresh.running_id == v1["id"]


def test_a_partial_rollout_reaches_only_its_share(
    server: ServerProcess,
    admin: httpx.Client,
    anon: httpx.Client,
    project: str,
    fixtures_dir: Path,
) -> None:
    url = manifest_url(server, project)
    publish(admin, project, fixtures_dir / "expo-export-sdk58-v1")
    v2 = publish(admin, project, fixtures_dir / "expo-export-sdk58-v2", rollout=50)["ios"]
    devices = [device() for _ in range(24)]
    for dev in devices:
        cycle(dev, anon, url)
    on_v2 = sum(dev.running_id == v2["id"] for dev in devices)
    assert 0 < on_v2 < len(devices)
    for dev in devices:
        assert dev.resolve_asset("4bad1fc2285c63b28c012ad904afdde2") is not None


def test_channels_and_runtime_ranges(
    server: ServerProcess,
    admin: httpx.Client,
    anon: httpx.Client,
    project: str,
    fixtures_dir: Path,
) -> None:
    url = manifest_url(server, project)
    v1 = fixtures_dir / "expo-export-sdk58-v1"
    ranged = publish(admin, project, v1, rv=">=1.0.0 <2.0.0", channel="beta")["ios"]
    beta = device("1.2.0", channel="beta")
    assert cycle(beta, anon, url) == "downloaded" and beta.running_id == ranged["id"]
    assert all(beta.resolve_asset(m) == d for m, d in export_assets(v1, "ios").items())
    assert cycle(device("2.0.0", channel="beta"), anon, url) == "nothing"
    assert cycle(device("1.2.0"), anon, url) == "nothing"  # production has nothing


def test_a_binary_upgrade_leaves_updates_of_the_old_runtime(
    server: ServerProcess,
    admin: httpx.Client,
    anon: httpx.Client,
    project: str,
    fixtures_dir: Path,
) -> None:
    url = manifest_url(server, project)
    publish(admin, project, fixtures_dir / "expo-export-sdk58-v1")
    dev = device()
    cycle(dev, anon, url)
    dev.install_build(EmbeddedBuild("1.1.0", datetime.now(UTC), {"embedded-bundle": b"// 1.1"}))
    assert dev.launch_bytes() == b"// 1.1"
    assert cycle(dev, anon, url) == "nothing"


def test_a_failed_update_falls_back_and_is_not_offered_again(
    server: ServerProcess,
    admin: httpx.Client,
    anon: httpx.Client,
    project: str,
    fixtures_dir: Path,
    on_v2: tuple[Device, dict[str, Any], dict[str, Any]],
) -> None:
    dev, v1, _ = on_v2
    assert dev.fail_launch().id == v1["id"]
    assert cycle(dev, anon, manifest_url(server, project)) in ("ignored", "nothing")
    assert dev.running_id == v1["id"]


def test_signed_manifests_verify_against_the_expo_tools_certificate(
    server: ServerProcess,
    admin: httpx.Client,
    anon: httpx.Client,
    project: str,
    fixtures_dir: Path,
) -> None:
    pair = fixtures_dir / "expo-codesigning"
    body = {
        "keyid": "main",
        "privateKeyPem": (pair / "private-key.pem").read_text(),
        "certificatePem": (pair / "certificate.pem").read_text(),
    }
    assert admin.put(f"/api/v1/projects/{project}/signing", json=body).status_code == 200
    url = manifest_url(server, project)
    v1 = publish(admin, project, fixtures_dir / "expo-export-sdk58-v1")["ios"]
    cert = x509.load_pem_x509_certificate((pair / "certificate.pem").read_bytes())
    dev = device(code_signing=CodeSigning(cert, keyid="main"))
    assert cycle(dev, anon, url) == "downloaded"
    assert admin.post(f"/api/v1/updates/{v1['id']}/rollback", json={}).status_code == 200
    assert cycle(dev, anon, url) == "rollBackToEmbedded"  # the signed directive verifies
    wrong = device(code_signing=CodeSigning(cert, keyid="root"))
    with pytest.raises(Exception, match="keyid"):
        cycle(wrong, anon, url)


def test_model_devices_ids_are_unique() -> None:
    assert len({device().client_id for _ in range(3)}) == 3
    assert uuid.UUID(device().embedded.id)


@pytest.mark.parametrize("backend", BACKENDS)
def test_updates_stored_before_md5_keys_serve_md5_keys_after_the_migration(
    server_factory: Callable[..., ServerProcess], fixtures_dir: Path, backend: str
) -> None:
    """Publish, take the schema back to 0002 (as a database of the previous release), start
    ``lumora serve`` again: migration 0003 computes the md5 of every stored blob."""
    srv = server_factory(backend)
    v1 = fixtures_dir / "expo-export-sdk58-v1"
    with srv.client() as admin:
        create_project(admin, "premd5")
        publish(admin, "premd5", v1)
    srv.stop()
    engine = create_db_engine(srv.database_url)
    try:
        cfg = alembic_config(engine)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0002")
    finally:
        engine.dispose()
    srv.start()
    dev = device()
    with srv.anon() as anon:
        assert cycle(dev, anon, manifest_url(srv, "premd5")) == "downloaded"
    assert all(dev.resolve_asset(m) == d for m, d in export_assets(v1, "ios").items())


@pytest.mark.parametrize("platform", ["ios", "android"])
def test_the_launch_asset_is_compressed_right_after_a_publish(
    server: ServerProcess,
    admin: httpx.Client,
    project: str,
    fixtures_dir: Path,
    tmp_path: Path,
    platform: str,
) -> None:
    """No window in which devices pay for the raw bundle (1.24 MB instead of ~0.5 MB)."""
    export = fresh_export(fixtures_dir / "expo-export-sdk58-v1", tmp_path)
    update = publish(admin, project, export, platforms=(platform,))[platform]
    with server.anon() as anon:
        resp = anon.get(update["launchAsset"]["url"], headers={"accept-encoding": "br, gzip"})
    assert resp.status_code == 200
    assert resp.headers.get("content-encoding") in ("br", "gzip")
    assert resp.content == export_bundle(export, platform)  # httpx decoded it
    assert int(resp.headers["content-length"]) < len(export_bundle(export, platform)) // 2


def test_the_sdk47_pair_moves_devices_and_resolves_its_image(
    server: ServerProcess,
    admin: httpx.Client,
    anon: httpx.Client,
    project: str,
    fixtures_dir: Path,
) -> None:
    url = manifest_url(server, project)
    old, new = fixtures_dir / "expo-export-1666629107", fixtures_dir / "expo-export-1674170951"
    publish(admin, project, old, rv="1")
    dev = device("1", platform="android")
    assert cycle(dev, anon, url) == "downloaded"
    assert dev.launch_bytes() == export_bundle(old, "android")
    publish(admin, project, new, rv="1")
    assert cycle(dev, anon, url) == "downloaded"
    assert dev.launch_bytes() == export_bundle(new, "android")
    assets = export_assets(new, "android")
    assert assets and all(dev.resolve_asset(m) == d for m, d in assets.items())


def test_a_delta_client_patches_its_way_to_v2_and_back(
    server: ServerProcess,
    admin: httpx.Client,
    anon: httpx.Client,
    project: str,
    fixtures_dir: Path,
) -> None:
    """expo-updates 55+ asks for the launch asset as a bsdiff patch from what it runs."""
    url = manifest_url(server, project)
    v1, v2 = fixtures_dir / "expo-export-sdk58-v1", fixtures_dir / "expo-export-sdk58-v2"
    first = publish(admin, project, v1)["android"]
    dev = device(platform="android", delta=True)
    cycle(dev, anon, url)
    second = publish(admin, project, v2)["android"]
    wait_for_patch(admin, second["id"], first["id"])
    assert cycle(dev, anon, url) == "downloaded"
    assert dev.patches_applied == 1 and dev.launch_bytes() == export_bundle(v2, "android")
    assert all(dev.resolve_asset(m) == d for m, d in export_assets(v2, "android").items())
    # Rolling v2 back republishes v1: the device moves back (patched or in full).
    assert admin.post(f"/api/v1/updates/{second['id']}/rollback", json={}).status_code == 200
    assert cycle(dev, anon, url) == "downloaded"
    assert dev.launch_bytes() == export_bundle(v1, "android")


def test_rolling_back_the_republished_update_does_not_bring_the_same_files_back(
    server: ServerProcess,
    admin: httpx.Client,
    anon: httpx.Client,
    project: str,
    on_v2: tuple[Device, dict[str, Any], dict[str, Any]],
) -> None:
    """v1, v2; roll v2 back (v1 republished); roll that back too: v1's files are as bad, so
    devices return to the embedded update rather than to v1 under yet another id."""
    dev, _, v2 = on_v2
    url = manifest_url(server, project)
    first = admin.post(f"/api/v1/updates/{v2['id']}/rollback", json={}).json()["replacement"]
    assert cycle(dev, anon, url) == "downloaded" and dev.running_id == first["id"]
    second = admin.post(f"/api/v1/updates/{first['id']}/rollback", json={}).json()["replacement"]
    assert second["kind"] == "rollbackToEmbedded"
    assert cycle(dev, anon, url) == "rollBackToEmbedded" and dev.launched is dev.embedded
