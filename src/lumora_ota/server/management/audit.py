"""Management API: the audit log (who did what, when, to which object).

Every management write calls ``record_audit`` inside its own transaction, so an action and
its audit row commit together. Secrets never go into ``detail``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from lumora_ota.api_models import AuditAnswer, Items
from lumora_ota.domain.manifest import iso_time
from lumora_ota.server.management.auth import (
    CurrentPrincipal,
    Principal,
    ReadSession,
    visible_project,
)
from lumora_ota.server.management.responses import answer
from lumora_ota.store.models import AuditEntry, utcnow

router = APIRouter(tags=["audit"])


def record_audit(
    session: Session,
    principal: Principal,
    action: str,
    *,
    project_id: str | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add an audit row for ``action`` (e.g. ``update.publish``) done by ``principal``."""
    session.add(
        AuditEntry(
            at=utcnow(),
            key_id=principal.key_id,
            project_id=project_id,
            action=action,
            target=target,
            detail=detail or {},
        )
    )


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    """The API shape of an audit row."""
    return {
        "id": entry.id,
        "at": iso_time(entry.at),
        "keyId": entry.key_id,
        "projectId": entry.project_id,
        "action": entry.action,
        "target": entry.target,
        "detail": entry.detail,
    }


@router.get(
    "/audit",
    summary="Recent management actions, newest first (admin)",
    **answer(Items[AuditAnswer]),
)
def list_audit(
    principal: CurrentPrincipal,
    session: ReadSession,
    project: Annotated[str | None, Query(description="Project id or slug")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Audit rows visible to the key: a project-scoped key sees its project's rows only."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if project is not None:
        # Another project's key learns nothing: 404 before the role check's 403.
        query = query.where(
            AuditEntry.project_id == visible_project(session, principal, project).id
        )
    elif principal.project_id is not None:
        query = query.where(AuditEntry.project_id == principal.project_id)
    principal.require("admin")
    return {"items": [audit_json(e) for e in session.scalars(query)]}
