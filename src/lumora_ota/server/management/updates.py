"""Management API: reading, patching, rolling back and promoting updates; their manifests."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import Field, model_validator
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse

from lumora_ota.api_models import (
    DeletedAnswer,
    ExpoManifest,
    GroupAnswer,
    RolledBackAnswer,
    UpdateAnswer,
    UpdatePage,
)
from lumora_ota.domain.hashes import b64url_from_hex
from lumora_ota.domain.manifest import asset_url, build_manifest, iso_time
from lumora_ota.domain.model import AssetRecord, UpdateRecord
from lumora_ota.server.context import app_context
from lumora_ota.server.management.audit import record_audit
from lumora_ota.server.management.auth import (
    CurrentPrincipal,
    Principal,
    ReadSession,
    WriteSession,
    visible_project,
)
from lumora_ota.server.management.deployments import CHANNEL_PATTERN
from lumora_ota.server.management.guards import GuardedJSONRoute, RequestModel, store_errors
from lumora_ota.server.management.responses import also, answer
from lumora_ota.server.problems import not_found
from lumora_ota.settings import Settings
from lumora_ota.store import repository, webhooks
from lumora_ota.store.models import Update

router = APIRouter(tags=["updates"], route_class=GuardedJSONRoute)

PlatformName = Literal["ios", "android", "web"]
# Strict: JSON true, 50.0 or "50" are not percentages.
Rollout = Annotated[int, Field(ge=0, le=100, strict=True)]
Flag = Annotated[bool, Field(strict=True)]
_UPDATE_ID = Annotated[str, Field(min_length=1, max_length=64)]


class UpdatePatch(RequestModel):
    """Body of ``PATCH /updates/{id}``."""

    rollout: Rollout | None = None
    mandatory: Flag | None = None


class RollbackRequest(RequestModel):
    """Body of ``POST /updates/{id}/rollback``: ``{}``, ``{to}`` or ``{toEmbedded: true}``."""

    to: _UPDATE_ID | None = None
    to_embedded: Flag = False

    @model_validator(mode="after")
    def _one_form(self) -> RollbackRequest:
        if self.to is not None and self.to_embedded:
            raise ValueError("give either 'to' or 'toEmbedded', not both")
        return self


class PromoteRequest(RequestModel):
    """Body of ``POST /updates/{id}/promote``; ``message`` replaces the copy's message."""

    channel: Annotated[str, Field(pattern=CHANNEL_PATTERN)]
    rollout: Rollout = 100
    mandatory: Flag | None = None
    message: Annotated[str, Field(max_length=1000)] | None = None


# ---------------------------------------------------------------- JSON shapes


def _asset_json(asset: AssetRecord, settings: Settings) -> dict[str, Any]:
    return {
        "key": asset.key,
        "sha256": asset.sha256,
        "md5": asset.md5,  # the manifest key (null only while the server cannot read the blob)
        "hash": b64url_from_hex(asset.sha256),
        "size": asset.size,
        "contentType": asset.content_type,
        "fileExtension": asset.file_extension,
        "url": asset_url(settings.resolved_asset_base_url, asset.sha256, asset.file_extension),
    }


def record_json(record: UpdateRecord, settings: Settings) -> dict[str, Any]:
    """The API shape of an update."""
    is_marker = record.kind == repository.KIND_ROLLBACK_TO_EMBEDDED
    return {
        "id": record.id,
        "groupId": record.group_id,
        "projectId": record.project_id,
        "channel": record.channel,
        "platform": record.platform,
        "runtimeVersion": record.runtime_version,
        "kind": "rollbackToEmbedded" if is_marker else "update",
        "message": record.message,
        "createdAt": iso_time(record.created_at),
        "rollout": record.rollout,
        "mandatory": record.mandatory,
        "status": "rolledBack" if record.status == repository.STATUS_ROLLED_BACK else "active",
        "sourceUpdateId": record.source_update_id,
        "launchAsset": _asset_json(record.launch_asset, settings) if record.launch_asset else None,
        "assets": [_asset_json(a, settings) for a in record.assets],
        "metadata": record.metadata,
        "extra": record.extra,
        "manifestUrl": None
        if is_marker
        else f"{settings.resolved_public_url}/api/v1/manifests/{record.id}",
    }


def update_json(update: Update, settings: Settings) -> dict[str, Any]:
    """The API shape of a stored update."""
    return record_json(repository.to_record(update), settings)


def visible_update(session: Session, principal: Principal, update_id: str) -> Update:
    """The update, if the key may see its project; else 404."""
    update = repository.get_update(session, update_id)
    if update is None or not principal.can_see(update.project_id):
        raise not_found(f"update {update_id!r}")
    return update


# ---------------------------------------------------------------- routes


@router.get(
    "/updates",
    summary="Updates, newest first, with filters and cursor paging",
    **answer(UpdatePage),
)
def list_updates(
    request: Request,
    principal: CurrentPrincipal,
    session: ReadSession,
    project: Annotated[str | None, Query(description="Project id or slug")] = None,
    channel: Annotated[str | None, Query(max_length=100)] = None,
    platform: PlatformName | None = None,
    runtime_version: Annotated[str | None, Query(alias="runtimeVersion", max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    """One page of updates; pass ``nextCursor`` back as ``cursor`` for the next one."""
    if project is not None:
        scope: list[str] | None = [visible_project(session, principal, project).id]
    else:
        scope = None if principal.project_id is None else [principal.project_id]
    filters = repository.UpdateFilter(
        project_ids=scope, channel=channel, platform=platform, runtime_version=runtime_version
    )
    with store_errors():
        page, next_cursor = repository.list_updates(session, filters, limit=limit, cursor=cursor)
    settings = app_context(request).settings
    return {"items": [update_json(u, settings) for u in page], "nextCursor": next_cursor}


@router.get("/updates/{update_id}", summary="One update with its assets", **answer(UpdateAnswer))
def get_update(
    update_id: str, request: Request, principal: CurrentPrincipal, session: ReadSession
) -> dict[str, Any]:
    """The update, or 404."""
    return update_json(visible_update(session, principal, update_id), app_context(request).settings)


@router.patch(
    "/updates/{update_id}",
    summary="Change rollout percentage or mandatory flag",
    **answer(UpdateAnswer),
)
def patch_update(
    update_id: str,
    body: UpdatePatch,
    request: Request,
    principal: CurrentPrincipal,
    session: WriteSession,
) -> dict[str, Any]:
    """Set ``rollout`` (0..100) and/or ``mandatory``."""
    update = visible_update(session, principal, update_id)
    principal.require("publish")
    previous = update.rollout
    repository.patch_update(session, update, rollout=body.rollout, mandatory=body.mandatory)
    webhooks.rollout_changed(session, update, previous)
    record_audit(
        session,
        principal,
        "update.patch",
        project_id=update.project_id,
        target=update.id,
        detail=body.model_dump(exclude_none=True),
    )
    session.commit()
    return update_json(update, app_context(request).settings)


@router.post(
    "/updates/{update_id}/rollback",
    summary="Roll an update back (optionally to an earlier update or to the embedded one)",
    **answer(RolledBackAnswer),
    responses=also(201, UpdateAnswer, "A new update (re-publish or roll-back-to-embedded)"),
)
def rollback_update(
    update_id: str,
    body: RollbackRequest,
    request: Request,
    principal: CurrentPrincipal,
    session: WriteSession,
) -> JSONResponse:
    """Every form moves the devices that run the update, because expo-updates launches only
    an update newer than the one it runs (as EAS does it):

    * ``{}`` (200): the update, marked rolled back, with ``replacement``: the update served
      before it republished as a new update (new id, ``createdAt`` now), or a new
      roll-back-to-embedded marker when there was none; null when nothing had to move (it was
      rolled back already, or a newer update replaces it anyway).
    * ``{to}`` (201): that earlier update republished as a new update.
    * ``{toEmbedded: true}`` (201): a roll-back-to-embedded marker for the update's channel,
      platform and runtime version.
    """
    update = visible_update(session, principal, update_id)
    principal.require("publish")
    settings = app_context(request).settings
    replacement: Update | None
    with store_errors():
        if body.to is not None:
            target = visible_update(session, principal, body.to)
            replacement = repository.rollback_to(
                session, update, target, created_by=principal.key_id
            )
        elif body.to_embedded:
            replacement = repository.rollback_to_embedded(
                session, update, created_by=principal.key_id
            )
        else:
            replacement = repository.rollback(session, update, created_by=principal.key_id)
    webhooks.emit(
        session,
        update.project_id,
        "update.rolled_back",
        {
            **webhooks.update_data(update),
            "to": body.to,
            "toEmbedded": body.to_embedded,
            "newUpdateId": replacement.id if replacement is not None else None,
        },
    )
    record_audit(
        session,
        principal,
        "update.rollback",
        project_id=update.project_id,
        target=update.id,
        detail={
            "to": body.to,
            "toEmbedded": body.to_embedded,
            "newUpdateId": replacement.id if replacement is not None else None,
        },
    )
    session.commit()
    if body.to is None and not body.to_embedded:
        answer = update_json(update, settings)
        answer["replacement"] = (
            update_json(replacement, settings) if replacement is not None else None
        )
        return JSONResponse(answer, status_code=200)
    assert replacement is not None
    return JSONResponse(update_json(replacement, settings), status_code=201)


@router.post(
    "/updates/{update_id}/promote",
    status_code=201,
    summary="Promote to another channel",
    **answer(UpdateAnswer),
)
def promote_update(
    update_id: str,
    body: PromoteRequest,
    request: Request,
    principal: CurrentPrincipal,
    session: WriteSession,
) -> dict[str, Any]:
    """Publish the same files on another channel as a new update (nothing is uploaded)."""
    update = visible_update(session, principal, update_id)
    principal.require("publish")
    with store_errors():
        channel = repository.ensure_channel(session, update.project_id, body.channel)
        copy = repository.promote(
            session,
            update,
            channel,
            rollout=body.rollout,
            mandatory=body.mandatory,
            created_by=principal.key_id,
        )
        if body.message is not None:
            copy.message = body.message
            session.flush()
    record_audit(
        session,
        principal,
        "update.promote",
        project_id=update.project_id,
        target=update.id,
        detail={"channel": channel.name, "newUpdateId": copy.id},
    )
    session.commit()
    return update_json(copy, app_context(request).settings)


@router.delete("/updates/{update_id}", summary="Delete an update", **answer(DeletedAnswer))
def delete_update(
    update_id: str, principal: CurrentPrincipal, session: WriteSession
) -> dict[str, Any]:
    """Delete the update (its files stay: other updates may share them). Devices move to what
    remains eligible on its channel. Answers ``{"deleted": [id]}``."""
    update = visible_update(session, principal, update_id)
    principal.require("publish")
    return _delete(session, principal, [update])


# ---------------------------------------------------------------- groups
# A publish makes one update per platform in one group: the group id addresses them all.


def visible_group(session: Session, principal: Principal, group_id: str) -> list[Update]:
    """The group's updates, if the key may see its project; else 404."""
    updates = repository.group_updates(session, group_id)
    if not updates or not principal.can_see(updates[0].project_id):
        raise not_found(f"update group {group_id!r}")
    return updates


def group_json(updates: list[Update], settings: Settings) -> dict[str, Any]:
    """The API shape of a group: its id, message, creation time and updates by platform."""
    first = updates[0]
    return {
        "id": first.group_id,
        "projectId": first.project_id,
        "message": first.message,
        "createdAt": iso_time(min(u.created_at for u in updates)),
        "updates": [update_json(u, settings) for u in updates],
    }


@router.get(
    "/groups/{group_id}",
    summary="One update group (the updates of one publish)",
    **answer(GroupAnswer),
)
def get_group(
    group_id: str, request: Request, principal: CurrentPrincipal, session: ReadSession
) -> dict[str, Any]:
    """The group with its updates (one per platform), or 404."""
    updates = visible_group(session, principal, group_id)
    return group_json(updates, app_context(request).settings)


@router.patch(
    "/groups/{group_id}",
    summary="Change rollout or mandatory of a whole group",
    **answer(GroupAnswer),
)
def patch_group(
    group_id: str,
    body: UpdatePatch,
    request: Request,
    principal: CurrentPrincipal,
    session: WriteSession,
) -> dict[str, Any]:
    """Set ``rollout`` and/or ``mandatory`` on every update of the group, in one transaction."""
    updates = visible_group(session, principal, group_id)
    principal.require("publish")
    for update in updates:
        previous = update.rollout
        repository.patch_update(session, update, rollout=body.rollout, mandatory=body.mandatory)
        webhooks.rollout_changed(session, update, previous)
        record_audit(
            session,
            principal,
            "update.patch",
            project_id=update.project_id,
            target=update.id,
            detail={**body.model_dump(exclude_none=True), "groupId": group_id},
        )
    session.commit()
    return group_json(updates, app_context(request).settings)


@router.delete(
    "/groups/{group_id}", summary="Delete every update of a group", **answer(DeletedAnswer)
)
def delete_group(
    group_id: str, principal: CurrentPrincipal, session: WriteSession
) -> dict[str, Any]:
    """Delete the group's updates, in one transaction. Answers ``{"deleted": [ids]}``."""
    updates = visible_group(session, principal, group_id)
    principal.require("publish")
    return _delete(session, principal, updates)


def _delete(session: Session, principal: Principal, updates: list[Update]) -> dict[str, Any]:
    deleted = [u.id for u in updates]
    for update in updates:
        webhooks.emit(session, update.project_id, "update.deleted", webhooks.update_data(update))
        record_audit(
            session,
            principal,
            "update.delete",
            project_id=update.project_id,
            target=update.id,
            detail={
                "groupId": update.group_id,
                "channel": update.channel.name,
                "platform": update.platform,
            },
        )
    repository.delete_updates(session, updates)
    session.commit()
    return {"deleted": deleted}


@router.get(
    "/manifests/{update_id}", summary="The Expo manifest of an update", **answer(ExpoManifest)
)
def get_manifest(
    update_id: str, request: Request, principal: CurrentPrincipal, session: ReadSession
) -> dict[str, Any]:
    """The Expo Updates v1 manifest JSON that devices get for this update."""
    update = visible_update(session, principal, update_id)
    if update.kind != repository.KIND_UPDATE:
        raise not_found(f"manifest of update {update_id!r} (a roll-back-to-embedded marker)")
    settings = app_context(request).settings
    return build_manifest(repository.to_record(update), settings.resolved_asset_base_url)
