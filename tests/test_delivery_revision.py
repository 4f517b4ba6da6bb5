"""The delivery revision moves as part of the unit of work (issue 18 item 5): any write to a
delivery table, through the ORM session, bumps it in the same transaction; no management
operation has to remember to."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from device_helpers import in_process_app
from harness import create_project, make_export, publish_export
from lumora_ota.signing import generate_signing_identity
from lumora_ota.store.db import DELIVERY_MODELS, read_revisions
from lumora_ota.store.models import ApiKey, Channel, DevicePin, Project, PublisherSignature, Update


def _revision(ctx: Any) -> int:
    return read_revisions(ctx.engine)[0]


def test_every_delivery_changing_operation_moves_the_revision(tmp_path: Path) -> None:
    """Each management operation that changes what devices get, through the real API: the
    revision after it is higher than before (no call site may be forgotten)."""
    with in_process_app(tmp_path, cache_poll_interval=3600) as (client, ctx):
        seen: dict[str, Any] = {}

        def ok(response: Any) -> Any:
            assert response.status_code < 300, response.text
            return response.json()

        def publish() -> None:
            answer, _ = publish_export(client, "rev", make_export(tmp_path / uuid.uuid4().hex))
            seen["update"] = answer["updates"][0]["id"]
            seen["group"] = answer["updates"][0]["groupId"]

        def channel_id() -> str:
            items = ok(client.get("/api/v1/deployments", params={"project": "rev"}))
            found = items["items"] if isinstance(items, dict) else items
            return str(next(d["id"] for d in found if d["name"] == "beta"))

        key_pem, cert_pem = generate_signing_identity("rev")
        operations: list[tuple[str, Callable[[], object]]] = [
            ("create project", lambda: create_project(client, "rev")),
            (
                "rename project",
                lambda: ok(client.patch("/api/v1/projects/rev", json={"name": "R"})),
            ),
            (
                "auto-pause setting",
                lambda: ok(client.patch("/api/v1/projects/rev", json={"autoPauseOnFailure": True})),
            ),
            (
                "create channel",
                lambda: ok(
                    client.post("/api/v1/deployments", json={"project": "rev", "name": "beta"})
                ),
            ),
            ("publish", publish),
            (
                "rollout",
                lambda: ok(client.patch(f"/api/v1/updates/{seen['update']}", json={"rollout": 50})),
            ),
            (
                "group rollout",
                lambda: ok(client.patch(f"/api/v1/groups/{seen['group']}", json={"rollout": 40})),
            ),
            (
                "promote",
                lambda: ok(
                    client.post(
                        f"/api/v1/updates/{seen['update']}/promote", json={"channel": "beta"}
                    )
                ),
            ),
            (
                "pause channel",
                lambda: ok(client.post(f"/api/v1/deployments/{channel_id()}/pause")),
            ),
            (
                "resume channel",
                lambda: ok(client.post(f"/api/v1/deployments/{channel_id()}/resume")),
            ),
            (
                "rename channel",
                lambda: ok(
                    client.put(f"/api/v1/deployments/{channel_id()}", json={"name": "gamma"})
                ),
            ),
            (
                "signing on",
                lambda: ok(
                    client.put(
                        "/api/v1/projects/rev/signing",
                        json={
                            "keyid": "main",
                            "privateKeyPem": key_pem.decode(),
                            "certificatePem": cert_pem.decode(),
                        },
                    )
                ),
            ),
            ("signing off", lambda: ok(client.delete("/api/v1/projects/rev/signing"))),
            ("publish again", publish),
            (
                "rollback",
                lambda: ok(client.post(f"/api/v1/updates/{seen['update']}/rollback", json={})),
            ),
            ("delete update", lambda: ok(client.delete(f"/api/v1/updates/{seen['update']}"))),
        ]
        for name, operation in operations:
            before = _revision(ctx)
            operation()
            assert _revision(ctx) > before, name


@pytest.mark.parametrize("model", DELIVERY_MODELS, ids=lambda m: m.__name__)
def test_a_session_write_to_any_delivery_table_moves_the_revision(
    tmp_path: Path, model: type
) -> None:
    """A change to a row of each delivery table, made with no call to any helper: changed
    and deleted rows move the revision at flush, in the same transaction."""
    with in_process_app(tmp_path, cache_poll_interval=3600) as (client, ctx):
        create_project(client, "raw")
        publish_export(client, "raw", make_export(tmp_path / "e"))
        key_pem, cert_pem = generate_signing_identity("raw")
        client.put(
            "/api/v1/projects/raw/signing",
            json={
                "keyid": "main",
                "privateKeyPem": key_pem.decode(),
                "certificatePem": cert_pem.decode(),
            },
        ).raise_for_status()
        with ctx.sessions() as session:  # a row of the tables the calls above leave empty
            project_id = session.scalars(select(Project.id).where(Project.slug == "raw")).one()
            session.add(DevicePin(project_id=project_id, device_id="qa-1", channel="production"))
            session.add(
                PublisherSignature(
                    project_id=project_id, body_sha256="0" * 64, kind="directive", body="{}",
                    signature="x",
                )
            )  # fmt: skip
            session.commit()
        with ctx.sessions() as session:
            row = session.scalars(select(model).limit(1)).one()
            column = next(
                c.key
                for c in model.__table__.columns  # type: ignore[attr-defined]
                if not c.primary_key and not c.foreign_keys and not c.unique
                and isinstance(getattr(row, c.key), (str, int, bool))
            )  # fmt: skip
            value = getattr(row, column)
            before = _revision(ctx)
            setattr(row, column, value)  # a no-op assignment is no change
            session.commit()
        assert _revision(ctx) == before
        with ctx.sessions() as session:
            row = session.scalars(select(model).limit(1)).one()
            setattr(row, column, _other(value))
            session.flush()
            session.rollback()  # nothing kept: the bump was in the same transaction
        assert _revision(ctx) == before
        with ctx.sessions() as session:
            row = session.scalars(select(model).limit(1)).one()
            setattr(row, column, _other(value))
            session.commit()
        assert _revision(ctx) > before


def _other(value: object) -> object:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return f"{value}x"


def test_writes_elsewhere_leave_the_revision_alone(tmp_path: Path) -> None:
    """Statistics, keys and audit rows do not make every delivery cache reload."""
    with in_process_app(tmp_path, cache_poll_interval=3600) as (client, ctx):
        create_project(client, "calm")
        before = _revision(ctx)
        client.post("/api/v1/keys", json={"name": "ci", "role": "publish"}).raise_for_status()
        with ctx.sessions() as session:
            assert session.scalars(select(ApiKey)).first() is not None
        assert _revision(ctx) == before
        assert {Project, Channel, Update} <= set(DELIVERY_MODELS)
