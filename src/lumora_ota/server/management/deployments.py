"""Management API: deployments, i.e. a project's release channels."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field
from sqlalchemy.orm import Session

from lumora_ota.api_models import DeploymentAnswer, DeploymentDetail, DeploymentListItem, Items
from lumora_ota.domain.manifest import iso_time
from lumora_ota.domain.model import UpdateRecord
from lumora_ota.domain.split import rollout_split
from lumora_ota.server.management.audit import record_audit
from lumora_ota.server.management.auth import (
    CurrentPrincipal,
    Principal,
    ReadSession,
    WriteSession,
    visible_project,
)
from lumora_ota.server.management.guards import GuardedJSONRoute, RequestModel, store_errors
from lumora_ota.server.management.responses import answer
from lumora_ota.server.problems import not_found
from lumora_ota.store import repository, webhooks
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
        "paused": channel.paused,
    }


def _record_summary(record: UpdateRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "groupId": record.group_id,
        "kind": "rollbackToEmbedded" if record.kind == "rollback_to_embedded" else "update",
        "message": record.message,
        "createdAt": iso_time(record.created_at),
        "rollout": record.rollout,
        "mandatory": record.mandatory,
    }


def serving_json(history: dict[str, list[UpdateRecord]], *, paused: bool) -> list[dict[str, Any]]:
    """What devices of the channel get, per platform and runtime version: the rollout split
    (``domain.split``, the selection engine's rules) as ``[{share, update}]``, shares in
    percent summing to 100, ``update`` null for "no update" (devices keep what they run)."""
    serving: list[dict[str, Any]] = []
    for platform in sorted(history):
        records = history[platform]
        runtimes = dict.fromkeys(r.runtime_version for r in records if r.is_active)
        for runtime in runtimes:
            split = rollout_split(records, runtime, paused=paused)
            serving.append(
                {
                    "platform": platform,
                    "runtimeVersion": runtime,
                    "split": [
                        {
                            "share": round(share.percent, 2),
                            "update": _record_summary(share.update) if share.update else None,
                        }
                        for share in split
                    ],
                }
            )
    return serving


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


@router.post(
    "/deployments",
    status_code=201,
    summary="Create a deployment (channel) (admin)",
    **answer(DeploymentAnswer),
)
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


@router.get(
    "/deployments",
    summary="Deployments with the updates they currently serve",
    **answer(Items[DeploymentListItem]),
)
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
        histories = repository.channel_histories(session, found.id)
        for channel in repository.list_channels(session, found.id):
            per_platform = current.get(channel.id, {})
            items.append(
                {
                    **deployment_json(channel),
                    "current": {
                        platform: {rv: update_summary(u) for rv, u in by_rv.items()}
                        for platform, by_rv in per_platform.items()
                    },
                    "serving": serving_json(histories.get(channel.id, {}), paused=channel.paused),
                }
            )
    return {"items": items}


@router.get("/deployments/{deployment_id}", summary="One deployment", **answer(DeploymentDetail))
def get_deployment(
    deployment_id: str, principal: CurrentPrincipal, session: ReadSession
) -> dict[str, Any]:
    """The deployment with what it serves (``serving``: the rollout split per platform and
    runtime version), or 404."""
    channel = visible_channel(session, principal, deployment_id)
    histories = repository.channel_histories(session, channel.project_id, channel.id)
    return {
        **deployment_json(channel),
        "serving": serving_json(histories.get(channel.id, {}), paused=channel.paused),
    }


@router.post(
    "/deployments/{deployment_id}/pause",
    summary="Pause a channel: it serves nothing",
    **answer(DeploymentAnswer),
)
def pause_deployment(
    deployment_id: str, principal: CurrentPrincipal, session: WriteSession
) -> dict[str, Any]:
    """While paused, devices asking for this channel get no update (they keep running what
    they have), as EAS's ``channel:pause``. Idempotent."""
    return _set_paused(session, principal, deployment_id, paused=True)


@router.post(
    "/deployments/{deployment_id}/resume",
    summary="Resume a paused channel",
    **answer(DeploymentAnswer),
)
def resume_deployment(
    deployment_id: str, principal: CurrentPrincipal, session: WriteSession
) -> dict[str, Any]:
    """The channel serves its updates again. Idempotent."""
    return _set_paused(session, principal, deployment_id, paused=False)


def _set_paused(
    session: Session, principal: Principal, deployment_id: str, *, paused: bool
) -> dict[str, Any]:
    channel = visible_channel(session, principal, deployment_id)
    principal.require("publish")
    was = channel.paused
    repository.set_channel_paused(session, channel, paused)
    if was != paused:
        webhooks.emit(
            session,
            channel.project_id,
            "channel.paused" if paused else "channel.resumed",
            {"channelId": channel.id, "channel": channel.name},
        )
        record_audit(
            session,
            principal,
            "deployment.pause" if paused else "deployment.resume",
            project_id=channel.project_id,
            target=channel.id,
            detail={"name": channel.name},
        )
    session.commit()
    return deployment_json(channel)


@router.put(
    "/deployments/{deployment_id}",
    summary="Rename a deployment (admin)",
    **answer(DeploymentAnswer),
)
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
