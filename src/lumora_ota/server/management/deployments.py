"""Management API: deployments, i.e. a project's release channels."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field
from sqlalchemy.orm import Session

from lumora_ota.domain.manifest import iso_time
from lumora_ota.server.management.audit import record_audit
from lumora_ota.server.management.auth import (
    CurrentPrincipal,
    Principal,
    ReadSession,
    WriteSession,
    visible_project,
)
from lumora_ota.server.management.guards import GuardedJSONRoute, RequestModel, store_errors
from lumora_ota.server.problems import not_found
from lumora_ota.store import repository
from lumora_ota.store.models import Channel, Update

router = APIRouter(tags=["deployments"], route_class=GuardedJSONRoute)

CHANNEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
ChannelName = Annotated[str, Field(pattern=CHANNEL_PATTERN)]


class DeploymentCreate(RequestModel):
    """Body of ``POST /deployments``."""

    project: Annotated[str, Field(min_length=1, max_length=64)]
    name: ChannelName


class DeploymentRename(RequestModel):
    """Body of ``PUT /deployments/{id}``."""

    name: ChannelName


def deployment_json(channel: Channel) -> dict[str, Any]:
    """The API shape of a deployment (channel)."""
    return {
        "id": channel.id,
        "projectId": channel.project_id,
        "name": channel.name,
        "createdAt": iso_time(channel.created_at),
    }


def update_summary(update: Update) -> dict[str, Any]:
    """A short description of the update a channel currently serves."""
    return {
        "id": update.id,
        "groupId": update.group_id,
        "kind": "rollbackToEmbedded"
        if update.kind == repository.KIND_ROLLBACK_TO_EMBEDDED
        else "update",
        "message": update.message,
        "createdAt": iso_time(update.created_at),
        "rollout": update.rollout,
        "mandatory": update.mandatory,
    }


def visible_channel(session: Session, principal: Principal, channel_id: str) -> Channel:
    """The channel with this id, if the key may see its project; else 404."""
    channel = session.get(Channel, channel_id)
    if channel is None or not principal.can_see(channel.project_id):
        raise not_found(f"deployment {channel_id!r}")
    return channel


@router.post("/deployments", status_code=201, summary="Create a deployment (channel) (admin)")
def create_deployment(
    body: DeploymentCreate, principal: CurrentPrincipal, session: WriteSession
) -> dict[str, Any]:
    """Add a channel to a project; 409 when the name is taken."""
    project = visible_project(session, principal, body.project)
    principal.require("admin")
    with store_errors():
        channel = repository.create_channel(session, project.id, body.name)
    record_audit(
        session,
        principal,
        "deployment.create",
        project_id=project.id,
        target=channel.id,
        detail={"name": channel.name},
    )
    session.commit()
    return deployment_json(channel)


@router.get("/deployments", summary="Deployments with the updates they currently serve")
def list_deployments(
    principal: CurrentPrincipal,
    session: ReadSession,
    project: Annotated[str | None, Query(description="Project id or slug")] = None,
) -> dict[str, Any]:
    """Channels of one project (or of every visible project) with, per platform and runtime
    version, the newest active update."""
    if project is not None:
        projects = [visible_project(session, principal, project)]
    else:
        scope = None if principal.project_id is None else [principal.project_id]
        projects = repository.list_projects(session, scope)
    items: list[dict[str, Any]] = []
    for found in projects:
        current = repository.current_updates(session, found.id)
        for channel in repository.list_channels(session, found.id):
            per_platform = current.get(channel.id, {})
            items.append(
                {
                    **deployment_json(channel),
                    "current": {
                        platform: {rv: update_summary(u) for rv, u in by_rv.items()}
                        for platform, by_rv in per_platform.items()
                    },
                }
            )
    return {"items": items}


@router.get("/deployments/{deployment_id}", summary="One deployment")
def get_deployment(
    deployment_id: str, principal: CurrentPrincipal, session: ReadSession
) -> dict[str, Any]:
    """The deployment, or 404."""
    return deployment_json(visible_channel(session, principal, deployment_id))


@router.put("/deployments/{deployment_id}", summary="Rename a deployment (admin)")
def rename_deployment(
    deployment_id: str, body: DeploymentRename, principal: CurrentPrincipal, session: WriteSession
) -> dict[str, Any]:
    """Rename the channel; 409 when the project already has one of that name."""
    channel = visible_channel(session, principal, deployment_id)
    principal.require("admin")
    old_name = channel.name
    with store_errors():
        repository.rename_channel(session, channel, body.name)
    record_audit(
        session,
        principal,
        "deployment.rename",
        project_id=channel.project_id,
        target=channel.id,
        detail={"from": old_name, "to": body.name},
    )
    session.commit()
    return deployment_json(channel)
