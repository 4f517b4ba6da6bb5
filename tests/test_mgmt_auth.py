"""API keys: roles, project scoping (404, never 403, across projects), revocation, expiry,
and the bootstrap key."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from harness import ServerProcess, create_project, make_export, publish_export
from lumora_ota.store import apikeys
from lumora_ota.store.db import create_db_engine, make_session_factory
from lumora_ota.store.models import ApiKey


@pytest.fixture
def direct_db(server: ServerProcess) -> Iterator[Engine]:
    """The shared server's database, opened directly (as the CLI's direct mode does)."""
    engine = create_db_engine(server.database_url, pool_size=2)
    yield engine
    engine.dispose()


def _new_key(c: httpx.Client, role: str, project: str | None = None, **extra: Any) -> str:
    body: dict[str, Any] = {"name": f"{role} key", "role": role, **extra}
    if project is not None:
        body["project"] = project
    resp = c.post("/api/v1/keys", json=body)
    assert resp.status_code == 201, resp.text
    secret: str = resp.json()["key"]
    assert secret.startswith("lum_")
    return secret


@pytest.fixture
def two_projects(server: ServerProcess, unique: str, tmp_path: Path) -> dict[str, Any]:
    """Projects A and B, each with one publish."""
    export = make_export(tmp_path / "e", seed=unique)
    with server.client() as c:
        a = create_project(c, f"a-{unique}")
        b = create_project(c, f"b-{unique}")
        a_pub, _ = publish_export(c, a["slug"], export)
        b_pub, _ = publish_export(c, b["slug"], export)
        b_channel = next(
            d for d in c.get("/api/v1/deployments", params={"project": b["id"]}).json()["items"]
        )
    return {"a": a, "b": b, "a_update": a_pub["updates"][0], "b_update": b_pub["updates"][0],
            "b_channel": b_channel}  # fmt: skip


def test_missing_or_unknown_key_is_401(server: ServerProcess) -> None:
    with server.anon() as anon:
        resp = anon.get("/api/v1/projects")
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert resp.headers["content-type"].startswith("application/problem+json")
        for header in ("Bearer lum_nope", "Basic abc", "Bearer", "lum_x"):
            bad = anon.get("/api/v1/whoami", headers={"authorization": header})
            assert bad.status_code == 401, header


def test_project_key_sees_nothing_of_other_project(
    server: ServerProcess, two_projects: dict[str, Any]
) -> None:
    a, b = two_projects["a"], two_projects["b"]
    b_update = two_projects["b_update"]["id"]
    with server.client() as admin:
        key = _new_key(admin, "admin", a["slug"])
    sha = "0" * 64
    with server.client(key) as c:
        assert c.get(f"/api/v1/projects/{a['id']}").status_code == 200
        assert [p["id"] for p in c.get("/api/v1/projects").json()["items"]] == [a["id"]]
        listed = c.get("/api/v1/updates").json()["items"]
        assert {u["projectId"] for u in listed} == {a["id"]}
        who = c.get("/api/v1/whoami").json()
        assert who["projectId"] == a["id"] and [p["id"] for p in who["projects"]] == [a["id"]]
        attempts = [
            c.get(f"/api/v1/projects/{b['id']}"),
            c.get(f"/api/v1/projects/{b['slug']}"),
            c.patch(f"/api/v1/projects/{b['slug']}", json={"name": "x"}),
            c.get("/api/v1/updates", params={"project": b["slug"]}),
            c.get(f"/api/v1/updates/{b_update}"),
            c.patch(f"/api/v1/updates/{b_update}", json={"rollout": 1}),
            c.post(f"/api/v1/updates/{b_update}/rollback", json={}),
            c.post(f"/api/v1/updates/{b_update}/promote", json={"channel": "x"}),
            c.get(f"/api/v1/manifests/{b_update}"),
            c.post(
                f"/api/v1/updates/{two_projects['a_update']['id']}/rollback", json={"to": b_update}
            ),
            c.get("/api/v1/deployments", params={"project": b["id"]}),
            c.get(f"/api/v1/deployments/{two_projects['b_channel']['id']}"),
            c.put(f"/api/v1/deployments/{two_projects['b_channel']['id']}", json={"name": "y"}),
            c.post("/api/v1/deployments", json={"project": b["id"], "name": "z"}),
            c.post("/api/v1/assets/missing", json={"project": b["slug"], "hashes": [sha]}),
            c.put(f"/api/v1/assets/{sha}", params={"project": b["slug"]}, content=b"x"),
            c.post(
                "/api/v1/updates/publish",
                json={
                    "project": b["slug"],
                    "runtimeVersion": "1",
                    "platforms": {"ios": {"launchAsset": {"key": "a.js", "sha256": sha}}},
                },
            ),
            c.get("/api/v1/audit", params={"project": b["slug"]}),
            c.post("/api/v1/keys", json={"name": "n", "role": "read", "project": b["id"]}),
        ]
        for resp in attempts:
            assert resp.status_code == 404, (resp.request.method, resp.request.url, resp.text)
            assert resp.headers["content-type"].startswith("application/problem+json")
    with server.client() as admin:
        assert admin.get(f"/api/v1/updates/{b_update}").json()["status"] == "active"


def test_roles(server: ServerProcess, two_projects: dict[str, Any]) -> None:
    a = two_projects["a"]
    update = two_projects["a_update"]["id"]
    with server.client() as admin:
        read_key = _new_key(admin, "read", a["id"])
        publish_key = _new_key(admin, "publish", a["id"])
        scoped_admin = _new_key(admin, "admin", a["id"])
    with server.client(read_key) as c:
        assert c.get(f"/api/v1/updates/{update}").status_code == 200
        assert c.get(f"/api/v1/manifests/{update}").status_code == 200
        assert c.patch(f"/api/v1/updates/{update}", json={"rollout": 5}).status_code == 403
        assert c.post(f"/api/v1/updates/{update}/rollback", json={}).status_code == 403
        missing = c.post("/api/v1/assets/missing", json={"project": a["id"], "hashes": []})
        assert missing.status_code == 403
        assert c.get("/api/v1/keys").status_code == 403
    with server.client(publish_key) as c:
        assert c.patch(f"/api/v1/updates/{update}", json={"rollout": 50}).status_code == 200
        created = c.post("/api/v1/deployments", json={"project": a["id"], "name": "nope"})
        assert created.status_code == 403
        assert c.post("/api/v1/keys", json={"name": "x", "role": "read"}).status_code == 403
        assert c.get("/api/v1/audit").status_code == 403
    with server.client(scoped_admin) as c:
        assert c.post("/api/v1/projects", json={"name": "n", "slug": "nope-x"}).status_code == 403
        resp = c.post("/api/v1/keys", json={"name": "child", "role": "read"})
        assert resp.status_code == 201 and resp.json()["projectId"] == a["id"]
        assert {k["projectId"] for k in c.get("/api/v1/keys").json()["items"]} == {a["id"]}


def test_revoked_key_is_401(server: ServerProcess, two_projects: dict[str, Any]) -> None:
    with server.client() as admin:
        secret = _new_key(admin, "read", two_projects["a"]["id"])
        with server.client(secret) as c:
            me = c.get("/api/v1/whoami")
            assert me.status_code == 200
        listed = admin.get("/api/v1/keys").json()["items"]
        entry = next(k for k in listed if k["id"] == me.json()["keyId"])
        assert "key" not in entry and entry["prefix"] == secret[: len(entry["prefix"])]
        assert entry["lastUsedAt"] is not None and entry["revokedAt"] is None
        revoked = admin.delete(f"/api/v1/keys/{entry['id']}")
        assert revoked.status_code == 200 and revoked.json()["revokedAt"]
        assert admin.delete("/api/v1/keys/00000000-0000-0000-0000-000000000000").status_code == 404
    with server.client(secret) as c:
        assert c.get("/api/v1/whoami").status_code == 401


def test_expired_key_is_401(server: ServerProcess, direct_db: Engine) -> None:
    sessions = make_session_factory(direct_db)
    with sessions() as session:
        _, expired = apikeys.create_key(
            session, name="old", role="admin", expires_at=datetime.now(UTC) - timedelta(seconds=1)
        )
        _, fresh = apikeys.create_key(
            session, name="new", role="read", expires_at=datetime.now(UTC) + timedelta(days=1)
        )
        session.commit()
    with server.client(expired) as c:
        assert c.get("/api/v1/whoami").status_code == 401
    with server.client(fresh) as c:
        assert c.get("/api/v1/whoami").json()["role"] == "read"
    with server.client() as admin:
        past = admin.post(
            "/api/v1/keys", json={"name": "p", "role": "read", "expiresAt": "2001-01-01T00:00:00Z"}
        )
        assert past.status_code == 422


def test_bootstrap_key_is_created_once(server: ServerProcess, direct_db: Engine) -> None:
    with server.client() as admin:
        me = admin.get("/api/v1/whoami").json()
    assert me["role"] == "admin" and me["projectId"] is None
    sessions = make_session_factory(direct_db)
    # Several processes starting at once race to create it; at most one insert may win.
    with ThreadPoolExecutor(4) as pool:
        created = list(
            pool.map(lambda _: apikeys.ensure_bootstrap_key(sessions, server.admin_key), range(4))
        )
    assert created == [False] * 4
    secret = "lum_boot_" + me["keyId"].replace("-", "")
    with ThreadPoolExecutor(4) as pool:
        created = list(pool.map(lambda _: apikeys.ensure_bootstrap_key(sessions, secret), range(4)))
    assert created.count(True) == 1
    with sessions() as session:
        count = session.scalar(
            select(func.count())
            .select_from(ApiKey)
            .where(ApiKey.secret_hash == apikeys.hash_secret(secret))
        )
    assert count == 1
    with server.client(secret) as c:
        assert c.get("/api/v1/whoami").json()["role"] == "admin"


def test_key_hashing_and_roles_unit() -> None:
    secret = apikeys.generate_secret()
    assert secret.startswith("lum_") and len(secret) > 40
    assert apikeys.hash_secret(secret) != secret
    assert len(apikeys.hash_secret(secret)) == 64
    assert apikeys.generate_secret() != secret
    assert apikeys.role_allows("admin", "publish")
    assert apikeys.role_allows("publish", "read")
    assert not apikeys.role_allows("read", "publish")
    assert not apikeys.role_allows("bogus", "read")
