"""Delta updates end to end on the real export pair: publish 1666629107 then 1674170951
(runtime version "1"), wait for the background patch, fetch the android launch asset the way
expo-updates 55+ does and apply it with Debian's classic ``bspatch``; then every fallback.

The tests of this module share one project and run in file order; the rollback test is last
because it retires the new update.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ServerFactory
from delta_helpers import (
    NEW_EXPORT,
    OLD_EXPORT,
    assert_full_bundle,
    bspatch,
    get_launch_asset,
    updates_by_platform,
    wait_for_patch,
)
from harness import ServerProcess, create_project, publish_export, sha256_hex
from lumora_ota.domain.hashes import hex_from_b64url
from lumora_ota.store.db import create_db_engine, read_revisions

PATCH_LIMIT_OF_BROTLI = 0.20


@dataclass
class Pair:
    """The published pair and what the tests compare against."""

    server: ServerProcess
    slug: str
    old: dict[str, dict[str, Any]]  # platform -> update JSON
    new: dict[str, dict[str, Any]]
    old_android: bytes
    new_android: bytes
    delta: dict[str, Any]  # GET /updates/{new android}/delta once the patch exists


def _bundle(export: Path, platform: str) -> bytes:
    return next((export / "bundles").glob(f"{platform}-*.js")).read_bytes()


@pytest.fixture(scope="module")
def pair(server: ServerProcess, fixtures_dir: Path) -> Pair:
    slug = f"delta-{uuid.uuid4().hex[:8]}"
    with server.client() as client:
        create_project(client, slug)
        old, _ = publish_export(client, slug, fixtures_dir / OLD_EXPORT, runtime_version="1")
        new, _ = publish_export(client, slug, fixtures_dir / NEW_EXPORT, runtime_version="1")
        old_updates, new_updates = updates_by_platform(old), updates_by_platform(new)
        delta = wait_for_patch(client, new_updates["android"]["id"], old_updates["android"]["id"])
    return Pair(
        server=server,
        slug=slug,
        old=old_updates,
        new=new_updates,
        old_android=_bundle(fixtures_dir / OLD_EXPORT, "android"),
        new_android=_bundle(fixtures_dir / NEW_EXPORT, "android"),
        delta=delta,
    )


def manifest_launch_sha256(pair: Pair) -> str:
    """The launch-asset hash of the android manifest a device is served (hex)."""
    headers = {
        "expo-protocol-version": "1",
        "expo-platform": "android",
        "expo-runtime-version": "1",
        "accept": "application/expo+json",
    }
    with pair.server.anon() as client:
        resp = client.get(f"/api/v1/expo/{pair.slug}/manifest", headers=headers)
    assert resp.status_code == 200, resp.text
    manifest = resp.json()
    assert manifest["id"] == pair.new["android"]["id"]
    return hex_from_b64url(manifest["launchAsset"]["hash"])


def test_patch_applies_with_classic_bspatch(pair: Pair, tmp_path: Path) -> None:
    old_id = pair.old["android"]["id"]
    resp = get_launch_asset(
        pair.server, pair.new["android"], current=old_id, embedded=str(uuid.uuid4())
    )
    assert resp.status_code == 226, resp.content[:200]
    assert resp.headers["im"] == "bsdiff"
    assert resp.headers["expo-base-update-id"] == old_id
    assert resp.headers["cache-control"] == "private, no-store"
    vary = {v.strip().lower() for v in resp.headers["vary"].split(",")}
    assert {"a-im", "expo-current-update-id"} <= vary  # (CORS adds Origin)
    assert "content-encoding" not in resp.headers
    patch = resp.content
    assert patch[:8] == b"BSDIFF40"

    result = bspatch(pair.old_android, patch, tmp_path)
    assert hashlib.sha256(result).hexdigest() == manifest_launch_sha256(pair)
    assert result == pair.new_android

    brotli_size = pair.delta["launchAsset"]["sizes"]["br"]
    full = get_launch_asset(pair.server, pair.new["android"], a_im=None, accept_encoding="br")
    assert full.headers["content-encoding"] == "br"
    assert len(full.content) == brotli_size  # the size recorded is what devices download
    assert len(patch) < PATCH_LIMIT_OF_BROTLI * brotli_size
    recorded = {p["baseUpdateId"]: p for p in pair.delta["patches"]}[old_id]
    assert recorded["size"] == len(patch) and recorded["useful"] is True


def test_patch_savings_are_counted_per_update(pair: Pair) -> None:
    old_id, new_id = pair.old["android"]["id"], pair.new["android"]["id"]
    resp = get_launch_asset(pair.server, pair.new["android"], current=old_id)
    assert resp.status_code == 226
    deadline = time.monotonic() + 30
    with pair.server.client() as client:
        while True:
            savings = client.get(f"/api/v1/updates/{new_id}/delta").json()["savings"]
            if savings["patchDownloads"] >= 1 and savings["compressionBytesSaved"] > 0:
                break
            assert time.monotonic() < deadline, savings
            time.sleep(0.2)
    brotli_size = pair.delta["launchAsset"]["sizes"]["br"]
    assert savings["patchBytesSaved"] >= brotli_size - len(resp.content)


def test_client_without_a_im_gets_the_full_bundle(pair: Pair) -> None:
    resp = get_launch_asset(
        pair.server, pair.new["android"], a_im=None, current=pair.old["android"]["id"]
    )
    assert_full_bundle(resp)
    assert resp.headers["content-encoding"] == "br"


def test_other_instance_manipulations_get_the_full_bundle(pair: Pair) -> None:
    resp = get_launch_asset(
        pair.server, pair.new["android"], a_im="vcdiff", current=pair.old["android"]["id"]
    )
    assert_full_bundle(resp)


def test_unknown_base_gets_the_full_bundle(pair: Pair) -> None:
    resp = get_launch_asset(pair.server, pair.new["android"], current=str(uuid.uuid4()))
    assert_full_bundle(resp)


def test_base_without_a_stored_patch_gets_the_full_bundle(pair: Pair) -> None:
    # The old ios update is a real update, but nothing was diffed from it toward android.
    resp = get_launch_asset(pair.server, pair.new["android"], current=pair.old["ios"]["id"])
    assert_full_bundle(resp)
    identity = get_launch_asset(
        pair.server, pair.new["android"], current=pair.old["ios"]["id"], accept_encoding="identity"
    )
    assert identity.status_code == 200 and sha256_hex(identity.content) == sha256_hex(
        pair.new_android
    )


def test_range_and_head_requests_get_the_full_bundle(pair: Pair) -> None:
    headers = {
        "a-im": "bsdiff",
        "expo-current-update-id": pair.old["android"]["id"],
        "expo-requested-update-id": pair.new["android"]["id"],
    }
    url = pair.new["android"]["launchAsset"]["url"]
    with pair.server.anon() as client:
        ranged = client.get(
            url, headers={**headers, "range": "bytes=0-99", "accept-encoding": "identity"}
        )
        head = client.head(url, headers=headers)
    assert ranged.status_code == 206 and ranged.content == pair.new_android[:100]
    assert head.status_code == 200 and "im" not in head.headers


def test_embedded_bundle_is_a_patch_base(pair: Pair, tmp_path: Path) -> None:
    embedded_id = str(uuid.uuid4())
    body = {
        "platform": "android",
        "runtimeVersion": "1",
        "embeddedUpdateId": embedded_id,
        "sha256": pair.old["android"]["launchAsset"]["sha256"],
    }
    url = f"/api/v1/projects/{pair.slug}/embedded"
    with pair.server.client() as client:
        created = client.post(url, json=body)
        assert created.status_code == 201, created.text
        assert created.json()["embeddedUpdateId"] == embedded_id
        assert client.post(url, json=body).status_code == 200  # idempotent
        other = {**body, "sha256": pair.new["android"]["launchAsset"]["sha256"]}
        assert client.post(url, json=other).status_code == 409
        listed = client.get(url).json()["items"]
        assert [item["embeddedUpdateId"] for item in listed] == [embedded_id]
        wait_for_patch(client, pair.new["android"]["id"], embedded_id)
    resp = get_launch_asset(
        pair.server, pair.new["android"], current=embedded_id, embedded=embedded_id
    )
    assert resp.status_code == 226, resp.content[:200]
    assert resp.headers["expo-base-update-id"] == embedded_id
    assert bspatch(pair.old_android, resp.content, tmp_path) == pair.new_android


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"platform": "android", "runtimeVersion": "1", "embeddedUpdateId": "e1",
          "sha256": "0" * 64}, 409),  # never uploaded
        ({"platform": "symbian", "runtimeVersion": "1", "embeddedUpdateId": "e1",
          "sha256": "0" * 64}, 422),
        ({"platform": "android", "runtimeVersion": "1", "embeddedUpdateId": "../x",
          "sha256": "0" * 64}, 422),
        ({"platform": "android", "runtimeVersion": "1", "embeddedUpdateId": "e1",
          "sha256": "0" * 64, "extra": 1}, 422),
    ],
)  # fmt: skip
def test_embedded_registration_rejects_bad_input(
    pair: Pair, body: dict[str, Any], status: int
) -> None:
    with pair.server.client() as client:
        resp = client.post(f"/api/v1/projects/{pair.slug}/embedded", json=body)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")


def test_embedded_registration_needs_the_publish_role(pair: Pair) -> None:
    with pair.server.client() as client:
        made = client.post(
            "/api/v1/keys", json={"name": f"reader-{uuid.uuid4().hex[:6]}", "role": "read"}
        )
        assert made.status_code == 201, made.text
        reader = made.json()["key"]
    body = {
        "platform": "android",
        "runtimeVersion": "1",
        "embeddedUpdateId": "e-read",
        "sha256": pair.old["android"]["launchAsset"]["sha256"],
    }
    with pair.server.client(reader) as client:
        resp = client.post(f"/api/v1/projects/{pair.slug}/embedded", json=body)
        assert resp.status_code == 403
        assert client.get(f"/api/v1/projects/{pair.slug}/embedded").status_code == 200
    with pair.server.anon() as client:
        assert client.post(f"/api/v1/projects/{pair.slug}/embedded", json=body).status_code == 401


def test_promoted_copies_are_patched_like_the_originals(pair: Pair, tmp_path: Path) -> None:
    """Patches are about content: promoting old then new to another channel makes a device
    there get the same patch, although no job ran for the copies."""
    with pair.server.client() as client:
        copies = []
        for update in (pair.old["android"], pair.new["android"]):
            resp = client.post(f"/api/v1/updates/{update['id']}/promote", json={"channel": "beta"})
            assert resp.status_code == 201, resp.text
            copies.append(resp.json())
    old_copy, new_copy = copies
    resp = get_launch_asset(pair.server, new_copy, current=old_copy["id"])
    assert resp.status_code == 226
    assert resp.headers["expo-base-update-id"] == old_copy["id"]
    assert bspatch(pair.old_android, resp.content, tmp_path) == pair.new_android


def delivery_metric(server: ServerProcess, name: str) -> float:
    """One ``lumora_delivery_*`` figure of a server process's /metrics."""
    text = httpx.get(
        f"{server.url}/metrics", headers={"authorization": f"Bearer {server.admin_key}"}, timeout=30
    ).text
    match = re.search(rf"^lumora_delivery_{name} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"no lumora_delivery_{name} in /metrics"
    return float(match.group(1))


def test_another_process_serves_new_patches(
    pair: Pair, server_factory: ServerFactory, fixtures_dir: Path, tmp_path: Path
) -> None:
    """A second server on the same database and blobs learns of patches computed by the
    first through the patch revision (it queries nothing per request), and its delivery
    cache is not dropped for them."""
    backend = "sqlite" if pair.server.database_url.startswith("sqlite") else "postgres"
    other = server_factory(
        backend,
        database_url=pair.server.database_url,
        storage_url=pair.server.storage_url or f"file://{pair.server.data_dir / 'blobs'}",
        extra_env=pair.server.extra_env,
    )
    slug = f"delta-mp-{uuid.uuid4().hex[:8]}"
    with pair.server.client() as client:
        create_project(client, slug)
        old, _ = publish_export(client, slug, fixtures_dir / OLD_EXPORT, runtime_version="1")
        old_id = updates_by_platform(old)["android"]["id"]
        assert get_launch_asset(other, pair.old["android"], current=old_id).status_code == 200
        new, _ = publish_export(client, slug, fixtures_dir / NEW_EXPORT, runtime_version="1")
        new_update = updates_by_platform(new)["android"]
        wait_for_patch(client, new_update["id"], old_id)
    deadline = time.monotonic() + 10  # the poll interval is 0.2 s in tests
    while (resp := get_launch_asset(other, new_update, current=old_id)).status_code != 226:
        assert_full_bundle(resp)
        assert time.monotonic() < deadline, "the other process never served the patch"
        time.sleep(0.1)
    assert bspatch(pair.old_android, resp.content, tmp_path) == pair.new_android

    # Registering a store build makes the first server's worker record a patch from it (and
    # nothing else changes): the other process serves it without dropping its delivery cache.
    # The other process may have served the patch from a reload its poller's previous
    # observation caused, before polling the publish and the patch itself (one query reads
    # both revisions): wait until it has, so the figures below are settled.
    deadline = time.monotonic() + 10
    while delivery_metric(other, "patch_changes") < 1:
        assert time.monotonic() < deadline, "the other process never saw the patch revision"
        time.sleep(0.1)
    engine = create_db_engine(pair.server.database_url)
    revision = read_revisions(engine)[0]
    # Let the other process's poller (every 0.2 s here) see every move up to ``revision``:
    # it must not count below as a drop caused by what follows.
    time.sleep(1.0)
    invalidations = delivery_metric(other, "cache_invalidations_total")
    patch_changes = delivery_metric(other, "patch_changes")
    embedded_id = f"store-{uuid.uuid4().hex[:8]}"
    body = {
        "platform": "android",
        "runtimeVersion": "1",
        "embeddedUpdateId": embedded_id,
        "sha256": updates_by_platform(old)["android"]["launchAsset"]["sha256"],
    }
    with pair.server.client() as client:
        registered = client.post(f"/api/v1/projects/{slug}/embedded", json=body)
        assert registered.status_code == 201, registered.text
        wait_for_patch(client, new_update["id"], embedded_id)
    deadline = time.monotonic() + 10
    while (
        resp := get_launch_asset(other, new_update, current=embedded_id, embedded=embedded_id)
    ).status_code != 226:
        assert_full_bundle(resp)
        assert time.monotonic() < deadline, "the other process never served the new patch"
        time.sleep(0.1)
    assert resp.headers["expo-base-update-id"] == embedded_id
    # It may serve it from a lazy reload before its poller reports the new patch revision.
    deadline = time.monotonic() + 10
    while delivery_metric(other, "patch_changes") <= patch_changes:
        assert time.monotonic() < deadline, "the other process never saw the new patch revision"
        time.sleep(0.1)
    # The module's shared server may change delivery for other projects meanwhile (its
    # background work), moving the revision: the other process drops its cache only for
    # such moves, never for the store build or its patch.
    moved = read_revisions(engine)[0] - revision
    engine.dispose()
    assert delivery_metric(other, "cache_invalidations_total") - invalidations <= moved
    other.stop()


def test_stale_patch_after_rollback_gets_the_full_bundle(pair: Pair) -> None:
    """Last in the module: rolls the new update back."""
    new, old_id = pair.new["android"], pair.old["android"]["id"]
    assert get_launch_asset(pair.server, new, current=old_id).status_code == 226
    with pair.server.client() as client:
        rolled = client.post(f"/api/v1/updates/{new['id']}/rollback", json={})
        assert rolled.status_code == 200, rolled.text
    assert_full_bundle(get_launch_asset(pair.server, new, current=old_id))
