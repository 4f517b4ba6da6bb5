"""Projects and deployments (channels) through the management API."""

from __future__ import annotations

from harness import ServerProcess, create_project, make_export, publish_export


def test_create_project_has_default_channels(server: ServerProcess, unique: str) -> None:
    with server.client() as c:
        project = create_project(c, f"app-{unique}", "My App")
        assert project["slug"] == f"app-{unique}"
        assert project["name"] == "My App"
        assert sorted(project["channels"]) == ["development", "preview", "production", "staging"]
        assert project["createdAt"].endswith("Z")
        by_id = c.get(f"/api/v1/projects/{project['id']}")
        by_slug = c.get(f"/api/v1/projects/{project['slug']}")
        assert by_id.status_code == by_slug.status_code == 200
        assert by_id.json() == by_slug.json() == project
        listed = c.get("/api/v1/projects").json()["items"]
        assert project["id"] in {p["id"] for p in listed}


def test_duplicate_slug_is_409(server: ServerProcess, unique: str) -> None:
    with server.client() as c:
        create_project(c, f"dup-{unique}")
        resp = c.post("/api/v1/projects", json={"name": "again", "slug": f"dup-{unique}"})
    assert resp.status_code == 409
    assert resp.headers["content-type"].startswith("application/problem+json")


def test_patch_project(server: ServerProcess, unique: str) -> None:
    with server.client() as c:
        project = create_project(c, f"patch-{unique}")
        resp = c.patch(
            f"/api/v1/projects/{project['slug']}",
            json={"name": "Renamed", "autoPauseOnFailure": True},
        )
        assert resp.status_code == 200
        assert resp.json()["name"] == "Renamed"
        assert resp.json()["autoPauseOnFailure"] is True
        assert c.get(f"/api/v1/projects/{project['id']}").json()["name"] == "Renamed"


def test_deployments_create_list_get_rename(server: ServerProcess, unique: str) -> None:
    with server.client() as c:
        project = create_project(c, f"dep-{unique}")
        resp = c.post("/api/v1/deployments", json={"project": project["slug"], "name": "beta"})
        assert resp.status_code == 201
        beta = resp.json()
        assert beta["projectId"] == project["id"] and beta["name"] == "beta"

        again = c.post("/api/v1/deployments", json={"project": project["id"], "name": "beta"})
        assert again.status_code == 409

        # One deployment: its fields, plus what it serves (nothing yet).
        assert c.get(f"/api/v1/deployments/{beta['id']}").json() == {**beta, "serving": []}
        renamed = c.put(f"/api/v1/deployments/{beta['id']}", json={"name": "beta-2"})
        assert renamed.status_code == 200 and renamed.json()["name"] == "beta-2"
        clash = c.put(f"/api/v1/deployments/{beta['id']}", json={"name": "production"})
        assert clash.status_code == 409

        items = c.get("/api/v1/deployments", params={"project": project["slug"]}).json()["items"]
        names = sorted(i["name"] for i in items)
        assert names == ["beta-2", "development", "preview", "production", "staging"]
        assert all(i["projectId"] == project["id"] for i in items)


def test_deployments_show_current_update(server: ServerProcess, unique: str, tmp_path) -> None:
    export = make_export(tmp_path / "export", seed=unique)
    with server.client() as c:
        project = create_project(c, f"cur-{unique}")
        first, _ = publish_export(c, project["slug"], export, channel="staging")
        second, _ = publish_export(c, project["slug"], export, channel="staging", message="2nd")
        items = c.get("/api/v1/deployments", params={"project": project["id"]}).json()["items"]
    staging = next(i for i in items if i["name"] == "staging")
    production = next(i for i in items if i["name"] == "production")
    assert production["current"] == {}
    ios_now = staging["current"]["ios"]["1"]
    assert ios_now["id"] == next(u["id"] for u in second["updates"] if u["platform"] == "ios")
    assert ios_now["message"] == "2nd"
    assert set(staging["current"]) == {"ios", "android"}
    assert first["groupId"] != second["groupId"]


def test_audit_records_writes(server: ServerProcess, unique: str) -> None:
    with server.client() as c:
        project = create_project(c, f"aud-{unique}")
        c.post("/api/v1/deployments", json={"project": project["id"], "name": "qa"})
        entries = c.get("/api/v1/audit", params={"project": project["slug"]}).json()["items"]
        me = c.get("/api/v1/whoami").json()
    actions = [e["action"] for e in entries]
    assert actions[:2] == ["deployment.create", "project.create"]
    assert all(e["keyId"] == me["keyId"] for e in entries)
    assert all(e["at"].endswith("Z") for e in entries)
