"""Management API: embedded bundles, and the background patch worker.

``POST /projects/{project}/embedded`` registers the launch asset a store build embeds (a blob
uploaded for the project, by SHA-256) under the build's embedded update id, for one platform
and runtime version. Devices still running that build send ``Expo-Current-Update-ID`` equal to
``Expo-Embedded-Update-ID``, so the first update after a store install can be a patch from
the embedded bundle too. ``GET`` lists the registrations.

``install`` starts the ``store.patches.PatchWorker`` that publishes (``schedule_patches``)
and registrations queue work on, and catches up on jobs a crash lost.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import Field
from sqlalchemy import select

from lumora_ota.api_models import EmbeddedAnswer, Items
from lumora_ota.domain.manifest import iso_time
from lumora_ota.server.context import AppContext, app_context
from lumora_ota.server.lifecycle import Lifecycle
from lumora_ota.server.management.audit import record_audit
from lumora_ota.server.management.auth import (
    CurrentPrincipal,
    ReadSession,
    WriteSession,
    visible_project,
)
from lumora_ota.server.management.guards import GuardedJSONRoute, RequestModel
from lumora_ota.server.management.responses import also, answer
from lumora_ota.server.management.updates import PlatformName
from lumora_ota.server.problems import ProblemError
from lumora_ota.store.models import Blob, EmbeddedBundle, utcnow
from lumora_ota.store.repository import project_has_blob

router = APIRouter(tags=["delta updates"], route_class=GuardedJSONRoute)

SHA256_PATTERN = r"^[0-9a-f]{64}$"
EMBEDDED_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class EmbeddedIn(RequestModel):
    """Body of ``POST /projects/{project}/embedded``."""

    platform: PlatformName
    runtime_version: Annotated[
        str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    ]
    embedded_update_id: Annotated[str, Field(pattern=EMBEDDED_ID_PATTERN)]
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN)]


def embedded_json(row: EmbeddedBundle, size: int | None) -> dict[str, Any]:
    """The API shape of a registration."""
    created: datetime = row.created_at
    return {
        "projectId": row.project_id,
        "platform": row.platform,
        "runtimeVersion": row.runtime_version,
        "embeddedUpdateId": row.embedded_update_id,
        "sha256": row.sha256,
        "size": size,
        "createdAt": iso_time(created),
    }


@router.post(
    "/projects/{project}/embedded",
    status_code=201,
    summary="Register a build's embedded bundle as a patch base",
    **answer(EmbeddedAnswer),
    responses=also(200, EmbeddedAnswer, "Already registered (same bundle)"),
)
def register_embedded(
    project: str,
    body: EmbeddedIn,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    session: WriteSession,
) -> dict[str, Any]:
    """Register (idempotently) the embedded launch asset of a build; 409 when the blob has
    not been uploaded for the project or the id is registered with another bundle."""
    ctx = app_context(request)
    found = visible_project(session, principal, project)
    principal.require("publish")
    if not project_has_blob(session, found.id, body.sha256):
        raise ProblemError(409, "the embedded bundle has not been uploaded", missing=[body.sha256])
    size = session.get(Blob, body.sha256)
    existing = session.get(EmbeddedBundle, (found.id, body.embedded_update_id))
    if existing is not None:
        same = (existing.sha256, existing.platform, existing.runtime_version) == (
            body.sha256,
            body.platform,
            body.runtime_version,
        )
        if not same:
            raise ProblemError(
                409, f"embedded update id {body.embedded_update_id!r} is registered already"
            )
        response.status_code = 200
        return embedded_json(existing, size.size if size else None)
    row = EmbeddedBundle(
        project_id=found.id,
        embedded_update_id=body.embedded_update_id,
        platform=body.platform,
        runtime_version=body.runtime_version,
        sha256=body.sha256,
        created_at=utcnow(),
    )
    session.add(row)
    record_audit(
        session,
        principal,
        "embedded.register",
        project_id=found.id,
        target=body.embedded_update_id,
        detail={"platform": body.platform, "runtimeVersion": body.runtime_version},
    )
    session.commit()
    ctx.patch_worker.submit_embedded(found.id, body.platform, body.runtime_version)
    return embedded_json(row, size.size if size else None)


@router.get(
    "/projects/{project}/embedded",
    summary="Registered embedded bundles",
    **answer(Items[EmbeddedAnswer]),
)
def list_embedded(
    project: str, principal: CurrentPrincipal, session: ReadSession
) -> dict[str, Any]:
    """The project's registered embedded bundles, newest first."""
    found = visible_project(session, principal, project)
    rows = session.execute(
        select(EmbeddedBundle, Blob.size)
        .join(Blob, Blob.sha256 == EmbeddedBundle.sha256)
        .where(EmbeddedBundle.project_id == found.id)
        .order_by(EmbeddedBundle.created_at.desc())
    )
    return {"items": [embedded_json(row, size) for row, size in rows]}


def install(ctx: AppContext, lifecycle: Lifecycle) -> None:
    """Start the patch worker, and re-queue patch jobs a crash may have lost."""
    worker = ctx.patch_worker

    async def start() -> None:
        await asyncio.to_thread(worker.catch_up)

    async def stop() -> None:
        worker.shutdown()

    lifecycle.on_start(start)
    lifecycle.on_stop(stop)
