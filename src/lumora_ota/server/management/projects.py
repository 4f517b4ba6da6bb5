"""Management API: projects (each created with the default channels)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field
from sqlalchemy.orm import Session

from lumora_ota.api_models import Items, ProjectAnswer
from lumora_ota.domain.manifest import iso_time
from lumora_ota.server.management.audit import record_audit
from lumora_ota.server.management.auth import (
    CurrentPrincipal,
    ReadSession,
    WriteSession,
    visible_project,
)
from lumora_ota.server.management.guards import GuardedJSONRoute, RequestModel, store_errors
from lumora_ota.server.management.responses import answer
from lumora_ota.store import repository
from lumora_ota.store.models import Project

router = APIRouter(tags=["projects"], route_class=GuardedJSONRoute)

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
ProjectName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]


class ProjectCreate(RequestModel):
    """Body of ``POST /projects``."""

    name: ProjectName
    slug: Annotated[str, Field(pattern=SLUG_PATTERN)]


class ProjectPatch(RequestModel):
    """Body of ``PATCH /projects/{project}``."""

    name: ProjectName | None = None
    auto_pause_on_failure: Annotated[bool, Field(strict=True)] | None = None


def project_json(session: Session, project: Project) -> dict[str, Any]:
    """The API shape of a project, with its channel names."""
    return {
        "id": project.id,
        "slug": project.slug,
        "name": project.name,
        "createdAt": iso_time(project.created_at),
        "autoPauseOnFailure": project.auto_pause_on_failure,
        "channels": [c.name for c in repository.list_channels(session, project.id)],
    }


@router.post(
    "/projects",
    status_code=201,
    summary="Create a project (all-projects admin)",
    **answer(ProjectAnswer),
)
def create_project(
    body: ProjectCreate, principal: CurrentPrincipal, session: WriteSession
) -> dict[str, Any]:
    """Create a project with channels production, staging, development and preview."""
    principal.require("admin")
    principal.require_all_projects()
    with store_errors():
        project = repository.create_project(session, name=body.name, slug=body.slug)
    record_audit(session, principal, "project.create", project_id=project.id, target=project.slug)
    session.commit()
    return project_json(session, project)


@router.get("/projects", summary="Projects visible to the key", **answer(Items[ProjectAnswer]))
def list_projects(principal: CurrentPrincipal, session: ReadSession) -> dict[str, Any]:
    """Every project the key may see."""
    scope = None if principal.project_id is None else [principal.project_id]
    return {"items": [project_json(session, p) for p in repository.list_projects(session, scope)]}


@router.get("/projects/{project}", summary="One project, by id or slug", **answer(ProjectAnswer))
def get_project(project: str, principal: CurrentPrincipal, session: ReadSession) -> dict[str, Any]:
    """The project, or 404 when it does not exist or the key may not see it."""
    return project_json(session, visible_project(session, principal, project))


@router.patch(
    "/projects/{project}",
    summary="Rename a project or change its settings (admin)",
    **answer(ProjectAnswer),
)
def patch_project(
    project: str, body: ProjectPatch, principal: CurrentPrincipal, session: WriteSession
) -> dict[str, Any]:
    """Change the project's name and/or auto-pause setting."""
    found = visible_project(session, principal, project)
    principal.require("admin")
    changes = body.model_dump(exclude_none=True, by_alias=True)
    if body.name is not None:
        found.name = body.name
    if body.auto_pause_on_failure is not None:
        found.auto_pause_on_failure = body.auto_pause_on_failure
    record_audit(
        session,
        principal,
        "project.update",
        project_id=found.id,
        target=found.slug,
        detail=changes,
    )
    session.commit()
    return project_json(session, found)
