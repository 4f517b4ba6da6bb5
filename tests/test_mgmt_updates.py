"""Updates through the management API: listing, paging, patching, promotion, rollback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import ServerProcess, create_project, make_export, publish_export


def _by_platform(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {u["platform"]: u for u in answer["updates"]}


@pytest.fixture
def published(
    server: ServerProcess, unique: str, tmp_path: Path
) -> tuple[httpx.Client, str, list[dict[str, Any]]]:
    """A project with three publishes: production rv 1 (x2) and staging rv 2."""
    c = server.client()
    slug = f"upd-{unique}"
    create_project(c, slug)
    export = make_export(tmp_path / "e", seed=unique)
    answers = [
        publish_export(c, slug, export, message="one")[0],
        publish_export(c, slug, export, message="two")[0],
        publish_export(c, slug, export, channel="staging", runtime_version="2", message="3")[0],
    ]
    yield c, slug, answers
    c.close()


def test_list_filters(published: tuple[httpx.Client, str, list[dict[str, Any]]]) -> None:
    c, slug, answers = published
    items = c.get("/api/v1/updates", params={"project": slug}).json()["items"]
    assert len(items) == 6
    times = [u["createdAt"] for u in items]
    assert times == sorted(times, reverse=True)
    assert {u["id"] for u in items[:2]} == {u["id"] for u in answers[2]["updates"]}

    def ids(**params: str) -> set[str]:
        resp = c.get("/api/v1/updates", params={"project": slug, **params})
        assert resp.status_code == 200
        return {u["id"] for u in resp.json()["items"]}

    staging = ids(channel="staging")
    assert staging == {u["id"] for u in answers[2]["updates"]}
    assert ids(runtimeVersion="2") == staging
    ios_production = ids(platform="ios", channel="production")
    assert ios_production == {_by_platform(a)["ios"]["id"] for a in answers[:2]}
    assert ids(channel="nope") == set()


def test_cursor_paging_visits_every_update_once(
    published: tuple[httpx.Client, str, list[dict[str, Any]]],
) -> None:
    c, slug, answers = published
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"project": slug, "limit": "4"}
        if cursor:
            params["cursor"] = cursor
        page = c.get("/api/v1/updates", params=params).json()
        seen.extend(u["id"] for u in page["items"])
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == 2
    assert len(seen) == len(set(seen)) == 6
    assert set(seen) == {u["id"] for a in answers for u in a["updates"]}
    bad = c.get("/api/v1/updates", params={"project": slug, "cursor": "not-a-cursor"})
    assert bad.status_code == 400


def test_get_and_patch(published: tuple[httpx.Client, str, list[dict[str, Any]]]) -> None:
    c, _, answers = published
    update = _by_platform(answers[0])["android"]
    got = c.get(f"/api/v1/updates/{update['id']}").json()
    assert got == update
    patched = c.patch(f"/api/v1/updates/{update['id']}", json={"rollout": 10, "mandatory": True})
    assert patched.status_code == 200
    assert patched.json()["rollout"] == 10 and patched.json()["mandatory"] is True
    only_rollout = c.patch(f"/api/v1/updates/{update['id']}", json={"rollout": 0}).json()
    assert only_rollout["rollout"] == 0 and only_rollout["mandatory"] is True


def test_promote_copies_assets_to_new_update(
    published: tuple[httpx.Client, str, list[dict[str, Any]]],
) -> None:
    c, _slug, answers = published
    source = _by_platform(answers[1])["ios"]
    resp = c.post(f"/api/v1/updates/{source['id']}/promote", json={"channel": "preview"})
    assert resp.status_code == 201
    promoted = resp.json()
    assert promoted["id"] != source["id"]
    assert promoted["channel"] == "preview"
    assert promoted["sourceUpdateId"] == source["id"]
    assert promoted["launchAsset"] == source["launchAsset"]
    assert promoted["assets"] == source["assets"]
    assert promoted["runtimeVersion"] == source["runtimeVersion"]
    assert (
        c.get(f"/api/v1/manifests/{promoted['id']}").json()["launchAsset"]["hash"]
        == (source["launchAsset"]["hash"])
    )
    # To a brand-new channel, which is created on demand.
    fresh = c.post(f"/api/v1/updates/{source['id']}/promote", json={"channel": "qa", "rollout": 5})
    assert fresh.status_code == 201 and fresh.json()["rollout"] == 5
    same = c.post(f"/api/v1/updates/{source['id']}/promote", json={"channel": "production"})
    assert same.status_code == 422


def test_rollback_marks_rolled_back(
    published: tuple[httpx.Client, str, list[dict[str, Any]]],
) -> None:
    c, _, answers = published
    update = _by_platform(answers[1])["ios"]
    resp = c.post(f"/api/v1/updates/{update['id']}/rollback", json={})
    assert resp.status_code == 200
    assert resp.json()["id"] == update["id"]
    assert resp.json()["status"] == "rolledBack"
    # Devices running it must move to something newer (expo-updates launches only newer
    # updates). The update before it has the very same files, as bad, so they return to the
    # embedded update (tests/test_expo_client_scenarios.py covers earlier, other files).
    replacement = resp.json()["replacement"]
    assert replacement["kind"] == "rollbackToEmbedded"
    assert replacement["sourceUpdateId"] == update["id"]
    assert replacement["createdAt"] >= update["createdAt"]
    # Rolling back again moves nothing more.
    again = c.post(f"/api/v1/updates/{update['id']}/rollback", json={})
    assert again.status_code == 200 and again.json()["replacement"] is None
    assert c.get(f"/api/v1/updates/{update['id']}").json()["status"] == "rolledBack"
    # The other platform of the group is untouched.
    other = _by_platform(answers[1])["android"]
    assert c.get(f"/api/v1/updates/{other['id']}").json()["status"] == "active"
    # A rolled-back update cannot be promoted.
    promote = c.post(f"/api/v1/updates/{update['id']}/promote", json={"channel": "preview"})
    assert promote.status_code == 409


def test_rollback_to_earlier_update_republishes(
    published: tuple[httpx.Client, str, list[dict[str, Any]]],
) -> None:
    c, slug, answers = published
    bad = _by_platform(answers[1])["android"]
    good = _by_platform(answers[0])["android"]
    missing_before = c.post(
        "/api/v1/assets/missing",
        json={"project": slug, "hashes": [good["launchAsset"]["sha256"]]},
    ).json()["missing"]
    assert missing_before == []
    resp = c.post(f"/api/v1/updates/{bad['id']}/rollback", json={"to": good["id"]})
    assert resp.status_code == 201
    new = resp.json()
    assert new["id"] not in (bad["id"], good["id"])
    assert new["sourceUpdateId"] == good["id"]
    assert new["channel"] == bad["channel"]
    assert new["status"] == "active" and new["kind"] == "update"
    assert new["launchAsset"] == good["launchAsset"]
    assert new["createdAt"] >= bad["createdAt"]
    assert c.get(f"/api/v1/updates/{bad['id']}").json()["status"] == "rolledBack"
    newest = c.get(
        "/api/v1/updates", params={"project": slug, "platform": "android", "limit": "1"}
    ).json()["items"][0]
    assert newest["id"] == new["id"]

    # The target must match platform and runtime version.
    ios = _by_platform(answers[0])["ios"]
    wrong_platform = c.post(f"/api/v1/updates/{bad['id']}/rollback", json={"to": ios["id"]})
    assert wrong_platform.status_code == 422
    other_rv = _by_platform(answers[2])["android"]
    wrong_rv = c.post(f"/api/v1/updates/{bad['id']}/rollback", json={"to": other_rv["id"]})
    assert wrong_rv.status_code == 422
    unknown = c.post(
        f"/api/v1/updates/{bad['id']}/rollback",
        json={"to": "00000000-0000-0000-0000-000000000000"},
    )
    assert unknown.status_code == 404


def test_rollback_to_embedded_records_marker(
    published: tuple[httpx.Client, str, list[dict[str, Any]]],
) -> None:
    c, slug, answers = published
    bad = _by_platform(answers[2])["ios"]
    resp = c.post(f"/api/v1/updates/{bad['id']}/rollback", json={"toEmbedded": True})
    assert resp.status_code == 201
    marker = resp.json()
    assert marker["kind"] == "rollbackToEmbedded"
    assert marker["channel"] == "staging"
    assert marker["platform"] == "ios"
    assert marker["runtimeVersion"] == "2"
    assert marker["launchAsset"] is None and marker["assets"] == []
    assert marker["manifestUrl"] is None
    assert c.get(f"/api/v1/manifests/{marker['id']}").status_code == 404
    assert c.get(f"/api/v1/updates/{bad['id']}").json()["status"] == "rolledBack"
    deployments = c.get("/api/v1/deployments", params={"project": slug}).json()["items"]
    staging = next(d for d in deployments if d["name"] == "staging")
    assert staging["current"]["ios"]["2"]["kind"] == "rollbackToEmbedded"
    assert staging["current"]["android"]["2"]["kind"] == "update"

    both = c.post(
        f"/api/v1/updates/{bad['id']}/rollback", json={"toEmbedded": True, "to": bad["id"]}
    )
    assert both.status_code == 422
