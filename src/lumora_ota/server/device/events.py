"""``POST`` ``endpoints.EVENTS``: outcome reports from client SDKs (no key; device-facing).

Events are validated, turned into device facts by the stats recorder (in memory; flushed in
batches) and acknowledged with 202. The project is resolved through the delivery cache, so
steady-state requests do not query the database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from lumora_ota.event_types import EventType
from lumora_ota.server.context import AppContext, app_context
from lumora_ota.server.endpoints import EVENTS
from lumora_ota.server.management.guards import GuardedJSONRoute
from lumora_ota.server.problems import ProblemError
from lumora_ota.stats import ClientEvent, stats_source

MAX_EVENTS_PER_REQUEST = 100
ID_FIELD = Field(min_length=1, max_length=200)

# The guarded route caps the body size and JSON nesting before validation.
router = APIRouter(tags=["device"], route_class=GuardedJSONRoute)


class EventIn(BaseModel):
    """One client event."""

    model_config = ConfigDict(extra="forbid")

    type: EventType = Field(description="What happened.")
    update_id: str | None = Field(
        default=None,
        alias="updateId",
        max_length=64,
        description="The update concerned (for `rollback`: the update rolled back from).",
    )
    at: datetime | None = Field(
        default=None,
        description="When it happened (ISO 8601). Times more than 30 days old or in the "
        "future are replaced by the server's time.",
    )
    to_update_id: str | None = Field(default=None, alias="toUpdateId", max_length=64)
    channel: str | None = Field(default=None, max_length=100)
    platform: str | None = Field(default=None, max_length=16)
    runtime_version: str | None = Field(default=None, alias="runtimeVersion", max_length=100)
    message: str | None = Field(default=None, max_length=4000)
    detail: str | dict[str, Any] | None = Field(default=None)


class EventsIn(BaseModel):
    """A batch of events from one device."""

    model_config = ConfigDict(extra="forbid")

    device_id: Annotated[str, ID_FIELD] = Field(alias="deviceId")
    project_id: Annotated[str, ID_FIELD] = Field(alias="projectId", description="Id or slug.")
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)


class EventsAccepted(BaseModel):
    """The answer to an events batch."""

    accepted: int


async def resolve_project(ctx: AppContext, ref: str) -> str | None:
    """The id of the project whose id or slug is ``ref``: from the delivery cache (no query in
    steady state) when the device routes registered one, else from the database."""
    return await ctx.delivery.project_id(ref)


async def project_update_ids(ctx: AppContext, project_id: str) -> frozenset[str]:
    """The ids of the project's updates: from the delivery cache (no query in steady state)
    when the device routes registered one, else from the database."""
    return await ctx.delivery.update_ids(project_id)


@router.api_route(
    EVENTS.path,
    methods=sorted(EVENTS.methods),
    status_code=202,
    response_model=EventsAccepted,
    summary="Report client events",
    description=(
        "Outcome reports from client SDKs: `download_completed`, `download_failed`, "
        "`install`, `launch_success`, `launch_failure`, `rollback` (at most "
        f"{MAX_EVENTS_PER_REQUEST} per request). Statistics count each (device, update, "
        "outcome) once, however often it is reported, and only for a device the server "
        "served that update to; events naming no update of the project are ignored. "
        "Unknown project: 404."
    ),
    responses={404: {"description": "Unknown project"}, 422: {"description": "Invalid body"}},
)
async def post_events(body: EventsIn, request: Request) -> JSONResponse:
    """Accept a batch of client events."""
    ctx = app_context(request)
    project_id = await resolve_project(ctx, body.project_id)
    if project_id is None:
        raise ProblemError(404, f"project {body.project_id!r} not found")
    recorder = ctx.stats
    recorder.record_events(
        project_id,
        body.device_id,
        # Update ids are lowercase UUIDs; some clients send them upper-cased.
        [
            ClientEvent(
                type=e.type, update_id=e.update_id.lower() if e.update_id else None, at=e.at
            )
            for e in body.events
        ],
        known=(await project_update_ids(ctx, project_id)).__contains__,
        source=stats_source(request.client.host if request.client else None),
    )
    return JSONResponse({"accepted": len(body.events)}, status_code=202)
