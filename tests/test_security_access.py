"""Access matrix: every management endpoint x every kind of caller.

Callers: no key, a revoked key, an expired key, a read key of project A, a publish key of
another project (B), publish and admin keys of A, and the all-projects admin key. Only the
callers with the right role and scope succeed; a key of another project gets 404 for A's
objects, never 403 (it must not learn that they exist); a visible object without the role
gets 403; a dead key gets 401. Afterwards no secret appears in the server log, the audit
trail or the key listing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from harness import ServerProcess, create_project, make_export, publish_export
from lumora_ota.signing import generate_signing_identity
from lumora_ota.store.db import create_db_engine
from lumora_ota.store.models import Webhook, WebhookDelivery, utcnow

ROLES = {"read": 1, "publish": 2, "admin": 3}


@dataclass(frozen=True)
class Caller:
    """One column of the matrix: a key (or none) and what it may do."""

    name: str
    secret: str | None
    role: str | None  # None: the key is missing, revoked or expired
    project: str | None  # "A", "B" or None (all projects)


@dataclass(frozen=True)
class Endpoint:
    """One row: a request against project A's objects and what it needs.

    ``scope`` is "project" (an object of A: other projects get 404), "global" (any valid key
    with the role; answers only with what the key may see) or "all-projects" (needs a key
    scoped to every project). ``build`` makes the request for a caller expected to succeed
    (fresh targets for destructive calls) or to be refused (any target).
    """

    name: str
    role: str
    scope: str
    build: Callable[[bool], tuple[str, str, dict[str, Any]]]
    # Answers that mean the caller got past the key, scope and role checks (e.g. 409 "no
    # halted plan", "not publisher-held") besides 2xx.
    also_ok: tuple[int, ...] = ()


def expected(endpoint: Endpoint, caller: Caller) -> int | None:
    """The refusal status for ``caller``, or None when it must succeed (2xx)."""
    if caller.role is None:
        return 401
    if endpoint.scope == "project" and caller.project not in (None, "A"):
        return 404
    if ROLES[caller.role] < ROLES[endpoint.role]:
        return 403
    if endpoint.scope == "all-projects" and caller.project is not None:
        return 403
    return None


class World:
    """Project A (with updates, a spare deployment, a key) and project B on one server."""

    def __init__(self, server: ServerProcess, root: Path, unique: str) -> None:
        self.server = server
        self.root = root
        self.unique = unique
        self.admin = server.client()
        self.a = create_project(self.admin, f"acl-a-{unique}")
        self.b = create_project(self.admin, f"acl-b-{unique}")
        self.export = make_export(root / "export", seed=unique)
        published, _ = publish_export(self.admin, self.a["slug"], self.export)
        self.update = published["updates"][0]
        publish_export(self.admin, self.b["slug"], make_export(root / "b", seed=unique + "b"))
        self.deployment = self._post("/api/v1/deployments", {"project": self.a["id"], "name": "d"})
        self.identity = generate_signing_identity("acl")
        self.hook_id, self.delivery_id = self._webhook_with_a_delivery()
        pinned = self.admin.put(
            f"/api/v1/projects/{self.a['id']}/devices/acl-device", json={"channel": "production"}
        )
        assert pinned.status_code == 200, pinned.text
        self.callers = self._callers()

    def _webhook_with_a_delivery(self) -> tuple[str, str]:
        """A webhook of A and one delivery of it, written straight into the database: the
        target is a loopback address, which the sender refuses without any network traffic
        (the API would refuse to create it)."""
        engine = create_db_engine(self.server.database_url)
        try:
            with Session(engine) as session:
                hook = Webhook(
                    project_id=self.a["id"],
                    url="http://127.0.0.1:9/never",
                    events=["update.flagged"],
                    secret="whsec_acl",
                    created_at=utcnow(),
                )
                session.add(hook)
                session.flush()
                delivery = WebhookDelivery(
                    webhook_id=hook.id,
                    event_id=str(uuid.uuid4()),
                    event_type="update.flagged",
                    body="{}",
                    status="failed",
                )
                session.add(delivery)
                session.commit()
                return hook.id, delivery.id
        finally:
            engine.dispose()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.admin.post(path, json=body)
        assert resp.status_code in (200, 201), resp.text
        answer: dict[str, Any] = resp.json()
        return answer

    def new_key(self, role: str, project: str | None, **extra: Any) -> dict[str, Any]:
        """A fresh key made by the all-projects admin."""
        body = {"name": f"{role}-{project}", "role": role, **extra}
        if project is not None:
            body["project"] = project
        return self._post("/api/v1/keys", body)

    def _callers(self) -> list[Caller]:
        revoked = self.new_key("admin", None)
        assert self.admin.delete(f"/api/v1/keys/{revoked['id']}").status_code == 200
        soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        expired = self.new_key("admin", None, expiresAt=soon)
        callers = [
            Caller("no key", None, None, None),
            Caller("revoked", revoked["key"], None, None),
            Caller("expired", expired["key"], None, None),
            Caller("read A", self.new_key("read", self.a["id"])["key"], "read", "A"),
            Caller("publish B", self.new_key("publish", self.b["id"])["key"], "publish", "B"),
            Caller("publish A", self.new_key("publish", self.a["id"])["key"], "publish", "A"),
            Caller("admin A", self.new_key("admin", self.a["id"])["key"], "admin", "A"),
            Caller("admin", self.server.admin_key, "admin", None),
        ]
        # Keys can expire: the expiring key works until its time, then gets 401.
        deadline = time.monotonic() + 15
        while self._whoami(expired["key"]) != 401:
            assert time.monotonic() < deadline, "the key did not expire"
            time.sleep(0.1)
        return callers

    def _whoami(self, secret: str) -> int:
        with self.server.client(secret) as c:
            return c.get("/api/v1/whoami").status_code

    def fresh_update(self) -> dict[str, Any]:
        """A new update of A (for rollbacks, which change their target)."""
        answer, _ = publish_export(
            self.admin, self.a["slug"], self.export, channel=f"c-{uuid.uuid4().hex[:8]}"
        )
        update: dict[str, Any] = answer["updates"][0]
        return update

    def endpoints(self) -> list[Endpoint]:
        """Every management endpoint, aimed at project A."""
        a, update, dep = self.a["id"], self.update, self.deployment
        launch = update["launchAsset"]
        bundle = (self.export / launch["key"]).read_bytes()

        def tag() -> str:
            return uuid.uuid4().hex[:8]

        def fixed(method: str, path: str, **kw: Any) -> Callable[[bool], Any]:
            return lambda ok: (method, path, kw)

        def publish_body(ok: bool) -> tuple[str, str, dict[str, Any]]:
            entry = {k: launch[k] for k in ("key", "sha256", "contentType", "fileExtension")}
            body = {"project": a, "channel": f"p-{tag()}", "runtimeVersion": "1",
                    "platforms": {"ios": {"launchAsset": entry, "assets": []}}}  # fmt: skip
            return "POST", "/api/v1/updates/publish", {"json": body}

        def rollback(ok: bool) -> tuple[str, str, dict[str, Any]]:
            target = self.fresh_update()["id"] if ok else update["id"]
            return "POST", f"/api/v1/updates/{target}/rollback", {"json": {}}

        def delete_update(ok: bool) -> tuple[str, str, dict[str, Any]]:
            target = self.fresh_update()["id"] if ok else update["id"]
            return "DELETE", f"/api/v1/updates/{target}", {}

        def delete_group(ok: bool) -> tuple[str, str, dict[str, Any]]:
            target = self.fresh_update()["groupId"] if ok else update["groupId"]
            return "DELETE", f"/api/v1/groups/{target}", {}

        def revoke(ok: bool) -> tuple[str, str, dict[str, Any]]:
            return "DELETE", f"/api/v1/keys/{self.new_key('read', a)['id']}", {}

        def new_hook(ok: bool) -> str:
            if not ok:
                return self.hook_id
            made = self._post(
                f"/api/v1/projects/{a}/webhooks",
                {"url": "http://8.8.8.8:9/never", "events": ["update.flagged"]},
            )
            return str(made["id"])

        def unpin(ok: bool) -> tuple[str, str, dict[str, Any]]:
            device = "acl-device"
            if ok:
                device = f"acl-{tag()}"
                pin = self.admin.put(
                    f"/api/v1/projects/{a}/devices/{device}", json={"channel": "production"}
                )
                assert pin.status_code == 200, pin.text
            return "DELETE", f"/api/v1/projects/{a}/devices/{device}", {}

        def planned(ok: bool, field: str) -> str:
            """A fresh update (or group) to give a plan, which moves its rollout."""
            return str((self.fresh_update() if ok else update)[field])

        plan = {"steps": [10, 100], "stepSeconds": 3600}
        hook_path = f"/api/v1/projects/{a}/webhooks"
        deliveries = f"{hook_path}/{self.hook_id}/deliveries"
        pem, cert = self.identity
        signing = {"keyid": "acl", "privateKeyPem": pem.decode(), "certificatePem": cert.decode()}
        embedded = {"platform": "ios", "runtimeVersion": "1", "sha256": launch["sha256"]}
        return [
            Endpoint("list projects", "read", "global", fixed("GET", "/api/v1/projects")),
            Endpoint("create project", "admin", "all-projects",
                     lambda ok: ("POST", "/api/v1/projects",
                                 {"json": {"name": "n", "slug": f"acl-new-{tag()}"}})),
            Endpoint("get project", "read", "project", fixed("GET", f"/api/v1/projects/{a}")),
            Endpoint("patch project", "admin", "project",
                     fixed("PATCH", f"/api/v1/projects/{a}", json={"name": "renamed"})),
            Endpoint("create deployment", "admin", "project",
                     lambda ok: ("POST", "/api/v1/deployments",
                                 {"json": {"project": a, "name": f"d-{tag()}"}})),
            Endpoint("list deployments", "read", "project",
                     fixed("GET", "/api/v1/deployments", params={"project": a})),
            Endpoint("list all deployments", "read", "global", fixed("GET", "/api/v1/deployments")),
            Endpoint("get deployment", "read", "project",
                     fixed("GET", f"/api/v1/deployments/{dep['id']}")),
            Endpoint("rename deployment", "admin", "project",
                     lambda ok: ("PUT", f"/api/v1/deployments/{dep['id']}",
                                 {"json": {"name": f"d-{tag()}"}})),
            Endpoint("missing assets", "publish", "project",
                     fixed("POST", "/api/v1/assets/missing",
                           json={"project": a, "hashes": [launch["sha256"]]})),
            Endpoint("upload asset", "publish", "project",
                     fixed("PUT", f"/api/v1/assets/{launch['sha256']}",
                           params={"project": a}, content=bundle)),
            Endpoint("publish", "publish", "project", publish_body),
            Endpoint("list updates", "read", "project",
                     fixed("GET", "/api/v1/updates", params={"project": a})),
            Endpoint("get update", "read", "project",
                     fixed("GET", f"/api/v1/updates/{update['id']}")),
            Endpoint("patch update", "publish", "project",
                     fixed("PATCH", f"/api/v1/updates/{update['id']}", json={"rollout": 100})),
            Endpoint("rollback", "publish", "project", rollback),
            Endpoint("promote", "publish", "project",
                     lambda ok: ("POST", f"/api/v1/updates/{update['id']}/promote",
                                 {"json": {"channel": f"pr-{tag()}"}})),
            Endpoint("delete update", "publish", "project", delete_update),
            Endpoint("get group", "read", "project",
                     fixed("GET", f"/api/v1/groups/{update['groupId']}")),
            Endpoint("patch group", "publish", "project",
                     fixed("PATCH", f"/api/v1/groups/{update['groupId']}", json={"rollout": 100})),
            Endpoint("delete group", "publish", "project", delete_group),
            Endpoint("pause deployment", "publish", "project",
                     fixed("POST", f"/api/v1/deployments/{dep['id']}/pause", json={})),
            Endpoint("resume deployment", "publish", "project",
                     fixed("POST", f"/api/v1/deployments/{dep['id']}/resume", json={})),
            Endpoint("get manifest", "read", "project",
                     fixed("GET", f"/api/v1/manifests/{update['id']}")),
            Endpoint("update delta", "read", "project",
                     fixed("GET", f"/api/v1/updates/{update['id']}/delta")),
            Endpoint("list keys", "admin", "global", fixed("GET", "/api/v1/keys")),
            Endpoint("create key", "admin", "project",
                     fixed("POST", "/api/v1/keys", json={"name": "k", "role": "read",
                                                         "project": a})),
            Endpoint("revoke key", "admin", "project", revoke),
            Endpoint("whoami", "read", "global", fixed("GET", "/api/v1/whoami")),
            Endpoint("put signing", "admin", "project",
                     fixed("PUT", f"/api/v1/projects/{a}/signing", json=signing)),
            Endpoint("get signing", "read", "project",
                     fixed("GET", f"/api/v1/projects/{a}/signing")),
            Endpoint("delete signing", "admin", "project",
                     fixed("DELETE", f"/api/v1/projects/{a}/signing")),
            Endpoint("stats", "read", "project",
                     fixed("GET", "/api/v1/stats", params={"project": a})),
            Endpoint("audit", "admin", "project",
                     fixed("GET", "/api/v1/audit", params={"project": a})),
            Endpoint("register embedded", "publish", "project",
                     lambda ok: ("POST", f"/api/v1/projects/{a}/embedded",
                                 {"json": {**embedded, "embeddedUpdateId": f"e-{tag()}"}})),
            Endpoint("list embedded", "read", "project",
                     fixed("GET", f"/api/v1/projects/{a}/embedded")),
            # Issue 19: rollout plans, webhooks, device pins and timelines.
            Endpoint("get plan", "read", "project",
                     fixed("GET", f"/api/v1/updates/{update['id']}/rollout-plan")),
            Endpoint("put plan", "publish", "project",
                     lambda ok: ("PUT", f"/api/v1/updates/{planned(ok, 'id')}/rollout-plan",
                                 {"json": plan})),
            Endpoint("put group plan", "publish", "project",
                     lambda ok: ("PUT", f"/api/v1/updates/{planned(ok, 'groupId')}/rollout-plan",
                                 {"json": plan})),
            Endpoint("delete plan", "publish", "project",
                     fixed("DELETE", f"/api/v1/updates/{update['id']}/rollout-plan")),
            Endpoint("resume plan", "publish", "project",
                     fixed("POST", f"/api/v1/updates/{update['groupId']}/rollout-plan/resume"),
                     also_ok=(409,)),
            Endpoint("create webhook", "admin", "project",
                     fixed("POST", hook_path,
                           json={"url": "http://8.8.8.8:9/never", "events": ["update.flagged"]})),
            Endpoint("list webhooks", "read", "project", fixed("GET", hook_path)),
            Endpoint("delete webhook", "admin", "project",
                     lambda ok: ("DELETE", f"{hook_path}/{new_hook(ok)}", {})),
            Endpoint("list deliveries", "read", "project", fixed("GET", deliveries)),
            Endpoint("redeliver", "publish", "project",
                     fixed("POST", f"{deliveries}/{self.delivery_id}/redeliver")),
            Endpoint("pin device", "publish", "project",
                     lambda ok: ("PUT", f"/api/v1/projects/{a}/devices/acl-{tag()}",
                                 {"json": {"channel": "production"}})),
            Endpoint("unpin device", "publish", "project", unpin),
            Endpoint("list pins", "read", "project", fixed("GET", f"/api/v1/projects/{a}/devices")),
            Endpoint("device timeline", "read", "project",
                     fixed("GET", f"/api/v1/projects/{a}/devices/acl-device")),
            # Issue 20: publisher-held signing (A's key is server-held: 409 past the checks).
            Endpoint("unsigned bodies", "read", "project",
                     fixed("GET", f"/api/v1/projects/{a}/signing/unsigned"), also_ok=(409,)),
            Endpoint("upload signatures", "publish", "project",
                     fixed("POST", f"/api/v1/projects/{a}/signing/signatures",
                           json={"signatures": [{"updateId": update["id"], "body": "{}",
                                                 "signature": "c2ln"}]}),
                     also_ok=(409,)),
        ]  # fmt: skip


@pytest.fixture(scope="module")
def world(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Projects, updates and keys of the matrix, made once per backend."""
    w = World(server, tmp_path_factory.mktemp("acl"), uuid.uuid4().hex[:8])
    yield w
    w.admin.close()


def _call(server: ServerProcess, caller: Caller, request: tuple[str, str, dict[str, Any]]) -> Any:
    method, path, kwargs = request
    headers = {"authorization": f"Bearer {caller.secret}"} if caller.secret else {}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        return c.request(method, path, headers=headers, **kwargs)


def test_access_matrix(server: ServerProcess, world: World) -> None:
    wrong: list[str] = []
    for endpoint in world.endpoints():
        for caller in world.callers:
            refusal = expected(endpoint, caller)
            resp = _call(server, caller, endpoint.build(refusal is None))
            if refusal is None:
                if not (200 <= resp.status_code < 300 or resp.status_code in endpoint.also_ok):
                    wrong.append(f"{endpoint.name} / {caller.name}: {resp.status_code} {resp.text}")
                elif caller.project == "B":
                    # Global listings answer, but never with A's objects.
                    assert world.a["id"] not in resp.text, (endpoint.name, resp.text[:300])
            elif resp.status_code != refusal:
                wrong.append(
                    f"{endpoint.name} / {caller.name}: {resp.status_code}, expected {refusal}"
                    f" {resp.text[:200]}"
                )
            elif refusal != 401:
                assert resp.headers["content-type"].startswith("application/problem+json")
    assert wrong == [], "\n".join(wrong)


def test_project_b_key_cannot_learn_that_a_exists(server: ServerProcess, world: World) -> None:
    """The 404 for A's objects is the same as for objects that do not exist."""
    b_key = next(c for c in world.callers if c.name == "publish B")
    headers = {"authorization": f"Bearer {b_key.secret}"}
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as c:
        for real, fake in [
            (f"/api/v1/projects/{world.a['id']}", f"/api/v1/projects/{uuid.uuid4()}"),
            (f"/api/v1/updates/{world.update['id']}", f"/api/v1/updates/{uuid.uuid4()}"),
        ]:
            seen, unseen = c.get(real), c.get(fake)
            assert seen.status_code == unseen.status_code == 404
            assert seen.json()["title"] == unseen.json()["title"]


def test_secrets_never_reach_logs_audit_or_listings(server: ServerProcess, world: World) -> None:
    secrets = [c.secret for c in world.callers if c.secret and c.secret != server.admin_key]
    # Use every key once more, successfully and not, so that logging had its chance.
    for caller in world.callers:
        _call(server, caller, ("GET", "/api/v1/whoami", {}))
        _call(server, caller, ("GET", "/api/v1/nope", {}))
    with server.client() as admin:
        keys_text = admin.get("/api/v1/keys").text
        audit_text = admin.get("/api/v1/audit", params={"limit": 500}).text
    log = server.log()
    for secret in [*secrets, server.admin_key]:
        assert secret not in log
        assert secret not in keys_text
        assert secret not in audit_text


def test_expiry_must_be_in_the_future_and_is_listed(world: World) -> None:
    past = world.admin.post(
        "/api/v1/keys", json={"name": "p", "role": "read", "expiresAt": "2001-01-01T00:00:00Z"}
    )
    assert past.status_code == 422
    future = datetime.now(UTC) + timedelta(days=3)
    key = world.new_key("read", world.a["id"], expiresAt=future.isoformat())
    assert key["expiresAt"].startswith(future.strftime("%Y-%m-%dT%H:%M"))
    listed = {k["id"]: k for k in world.admin.get("/api/v1/keys").json()["items"]}
    assert listed[key["id"]]["expiresAt"] == key["expiresAt"]
