"""Management API: API keys, ``/whoami``, and the bootstrap admin key created at start."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from lumora_ota.api_models import Items, KeyAnswer, NewKeyAnswer, WhoAmIAnswer
from lumora_ota.domain.manifest import iso_time
from lumora_ota.server.context import AppContext
from lumora_ota.server.lifecycle import Lifecycle
from lumora_ota.server.management.audit import record_audit
from lumora_ota.server.management.auth import (
    CurrentPrincipal,
    Principal,
    ReadSession,
    WriteSession,
    visible_project,
)
from lumora_ota.server.management.guards import GuardedJSONRoute, RequestModel
from lumora_ota.server.management.responses import answer
from lumora_ota.server.problems import ProblemError, not_found
from lumora_ota.store import apikeys, repository
from lumora_ota.store.models import ApiKey

router = APIRouter(tags=["keys"], route_class=GuardedJSONRoute)
log = logging.getLogger("lumora_ota.server")


class KeyCreate(RequestModel):
    """Body of ``POST /keys``."""

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
    role: Literal["admin", "publish", "read"]
    project: Annotated[str | None, Field(min_length=1, max_length=64)] = None
    expires_at: datetime | None = None


def key_json(key: ApiKey) -> dict[str, Any]:
    """The API shape of a key, without its secret."""
    return {
        "id": key.id,
        "name": key.name,
        "role": key.role,
        "projectId": key.project_id,
        "prefix": key.prefix,
        "createdAt": iso_time(key.created_at),
        "expiresAt": iso_time(key.expires_at) if key.expires_at else None,
        "revokedAt": iso_time(key.revoked_at) if key.revoked_at else None,
        "lastUsedAt": iso_time(key.last_used_at) if key.last_used_at else None,
    }


def _visible_key(session: Session, principal: Principal, key_id: str) -> ApiKey:
    key = apikeys.get_key(session, key_id)
    if key is None or (principal.project_id is not None and key.project_id != principal.project_id):
        raise not_found(f"key {key_id!r}")
    return key


@router.post(
    "/keys",
    status_code=201,
    summary="Create an API key (admin); the key is shown once",
    **answer(NewKeyAnswer),
)
def create_key(
    body: KeyCreate, principal: CurrentPrincipal, session: WriteSession
) -> dict[str, Any]:
    """Create a key. A project-scoped admin may only create keys for its own project."""
    project_id = principal.project_id
    if body.project is not None:
        # Another project's key learns nothing: 404 before the role check's 403.
        project_id = visible_project(session, principal, body.project).id
    principal.require("admin")
    expires_at = body.expires_at
    if expires_at is not None:
        expires_at = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
        if expires_at <= datetime.now(UTC):
            raise ProblemError(422, "expiresAt must be in the future")
    key, secret = apikeys.create_key(
        session, name=body.name, role=body.role, project_id=project_id, expires_at=expires_at
    )
    record_audit(
        session,
        principal,
        "key.create",
        project_id=project_id,
        target=key.id,
        detail={"name": key.name, "role": key.role},
    )
    session.commit()
    return {**key_json(key), "key": secret}


@router.get(
    "/keys", summary="API keys (admin); secrets are never shown", **answer(Items[KeyAnswer])
)
def list_keys(principal: CurrentPrincipal, session: ReadSession) -> dict[str, Any]:
    """Every key the caller may manage."""
    principal.require("admin")
    keys = apikeys.list_keys(session, project_id=principal.project_id)
    return {"items": [key_json(k) for k in keys]}


@router.delete("/keys/{key_id}", summary="Revoke an API key (admin)", **answer(KeyAnswer))
def revoke_key(key_id: str, principal: CurrentPrincipal, session: WriteSession) -> dict[str, Any]:
    """Revoke a key at once; it gets 401 from then on."""
    key = _visible_key(session, principal, key_id)
    principal.require("admin")
    apikeys.revoke_key(session, key.id)
    record_audit(session, principal, "key.revoke", project_id=key.project_id, target=key.id)
    session.commit()
    return key_json(key)


@router.get(
    "/whoami", summary="The calling key and the projects it can see", **answer(WhoAmIAnswer)
)
def whoami(principal: CurrentPrincipal, session: ReadSession) -> dict[str, Any]:
    """Who the key is, and which projects it may see."""
    scope = None if principal.project_id is None else [principal.project_id]
    return {
        "keyId": principal.key_id,
        "name": principal.name,
        "role": principal.role,
        "projectId": principal.project_id,
        "projects": [
            {"id": p.id, "slug": p.slug, "name": p.name}
            for p in repository.list_projects(session, scope)
        ],
    }


def install_bootstrap(ctx: AppContext, lifecycle: Lifecycle) -> None:
    """Create the ``LUMORA_BOOTSTRAP_ADMIN_KEY`` admin key at start when it does not exist."""
    secret = ctx.settings.bootstrap_admin_key
    if not secret:
        return

    async def create_bootstrap_key() -> None:
        created = await run_in_threadpool(apikeys.ensure_bootstrap_key, ctx.sessions, secret)
        if created:
            log.info("created the bootstrap admin key from LUMORA_BOOTSTRAP_ADMIN_KEY")

    lifecycle.on_start(create_bootstrap_key)
