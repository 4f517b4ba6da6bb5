"""Management API: device pins and the device timeline (issue 19).

``PUT /projects/{project}/devices/{deviceId} {"channel"}`` pins a device (an ``eas-client-id``
or the check API's ``deviceId``) to a channel: it is served that channel whatever it asks
for; ``DELETE`` unpins; ``GET /projects/{project}/devices`` lists the pins.
``GET /projects/{project}/devices/{deviceId}`` is what the server knows of one device: its
pin, its last check, the updates it was served and why, and what it reported about them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lumora_ota.api_models import DeviceTimelineAnswer, Items, PinAnswer, UnpinnedAnswer
from lumora_ota.domain.manifest import iso_time
from lumora_ota.domain.rollout import ROLLOUT_BUCKETS, rollout_bucket
from lumora_ota.server.management.audit import record_audit
from lumora_ota.server.management.auth import (
    CurrentPrincipal,
    ReadSession,
    WriteSession,
    visible_project,
)
from lumora_ota.server.management.deployments import CHANNEL_PATTERN
from lumora_ota.server.management.guards import GuardedJSONRoute, RequestModel
from lumora_ota.server.management.responses import answer
from lumora_ota.server.problems import ProblemError, not_found
from lumora_ota.store.models import (
    Channel,
    DevicePin,
    DeviceServed,
    DeviceState,
    DeviceUpdateFact,
    RolloutPlan,
    Update,
    utcnow,
)

router = APIRouter(tags=["devices"], route_class=GuardedJSONRoute)

MAX_PINS_PER_PROJECT = 10_000
# The timeline lists at most this many served updates and reports: what anonymous devices
# can make it show is bounded by the statistics' own caps (one row per device, update and
# fact), and this bounds the answer.
TIMELINE_LIMIT = 100
DeviceId = Annotated[str, Path(min_length=1, max_length=200)]


class PinRequest(RequestModel):
    """Body of ``PUT /projects/{project}/devices/{deviceId}``."""

    channel: Annotated[str, Field(pattern=CHANNEL_PATTERN)]


def pin_json(pin: DevicePin) -> dict[str, Any]:
    """The API shape of a pin."""
    return {
        "deviceId": pin.device_id,
        "channel": pin.channel,
        "createdAt": iso_time(pin.created_at),
    }


@router.put(
    "/projects/{project}/devices/{device_id}",
    summary="Pin a device to a channel",
    **answer(PinAnswer),
)
def pin_device(
    project: str,
    device_id: DeviceId,
    body: PinRequest,
    principal: CurrentPrincipal,
    session: WriteSession,
) -> dict[str, Any]:
    """The device is served ``channel`` whatever channel it asks for. 422 when the project
    has no such channel; 409 past 10,000 pins."""
    found = visible_project(session, principal, project)
    principal.require("publish")
    channel = session.scalar(
        select(Channel).where(Channel.project_id == found.id, Channel.name == body.channel)
    )
    if channel is None:
        raise ProblemError(422, f"project {project!r} has no channel {body.channel!r}")
    pin = session.get(DevicePin, (found.id, device_id))
    if pin is None:
        count = session.scalar(
            select(func.count()).select_from(DevicePin).where(DevicePin.project_id == found.id)
        )
        if (count or 0) >= MAX_PINS_PER_PROJECT:
            raise ProblemError(409, f"a project has at most {MAX_PINS_PER_PROJECT} pins")
        pin = DevicePin(project_id=found.id, device_id=device_id)
        session.add(pin)
    pin.channel = channel.name
    pin.created_at = utcnow()
    pin.created_by = principal.key_id
    session.flush()
    record_audit(
        session,
        principal,
        "device.pin",
        project_id=found.id,
        target=device_id,
        detail={"channel": channel.name},
    )
    session.commit()
    return pin_json(pin)


@router.delete(
    "/projects/{project}/devices/{device_id}",
    summary="Unpin a device",
    **answer(UnpinnedAnswer),
)
def unpin_device(
    project: str, device_id: DeviceId, principal: CurrentPrincipal, session: WriteSession
) -> dict[str, Any]:
    """The device gets the channel it asks for again; 404 when it was not pinned."""
    found = visible_project(session, principal, project)
    principal.require("publish")
    pin = session.get(DevicePin, (found.id, device_id))
    if pin is None:
        raise not_found(f"pin of device {device_id!r}")
    session.delete(pin)
    record_audit(session, principal, "device.unpin", project_id=found.id, target=device_id)
    session.commit()
    return {"unpinned": device_id}


@router.get(
    "/projects/{project}/devices",
    summary="The project's pinned devices",
    **answer(Items[PinAnswer]),
)
def list_pins(project: str, principal: CurrentPrincipal, session: ReadSession) -> dict[str, Any]:
    """``{"items": [pin, ...]}``, by device id."""
    found = visible_project(session, principal, project)
    pins = session.scalars(
        select(DevicePin).where(DevicePin.project_id == found.id).order_by(DevicePin.device_id)
    )
    return {"items": [pin_json(p) for p in pins]}


@router.get(
    "/projects/{project}/devices/{device_id}",
    summary="One device's timeline",
    **answer(DeviceTimelineAnswer),
)
def device_timeline(
    project: str, device_id: DeviceId, principal: CurrentPrincipal, session: ReadSession
) -> dict[str, Any]:
    """The device's pin, its last check (channel, platform, update it runs), and its
    timeline newest first: each update it was served (with why: channel, pin, rollout bucket
    against the rollout, plan step) and each outcome it reported (download, install, launch,
    launch failure, rollback). 404 when the server knows nothing of the device."""
    found = visible_project(session, principal, project)
    pin = session.get(DevicePin, (found.id, device_id))
    state = session.get(DeviceState, (found.id, device_id))
    served = list(
        session.scalars(
            select(DeviceServed)
            .where(DeviceServed.project_id == found.id, DeviceServed.device_id == device_id)
            .order_by(DeviceServed.at.desc())
            .limit(TIMELINE_LIMIT)
        )
    )
    facts = list(
        session.scalars(
            select(DeviceUpdateFact)
            .where(DeviceUpdateFact.project_id == found.id, DeviceUpdateFact.device_id == device_id)
            .order_by(DeviceUpdateFact.at.desc())
            .limit(TIMELINE_LIMIT)
        )
    )
    if pin is None and state is None and not served and not facts:
        raise not_found(f"device {device_id!r}")
    events: list[dict[str, Any]] = []
    for row in served:
        events.append(
            {
                "at": iso_time(row.at),
                "type": "served",
                "updateId": row.update_id,
                "why": _why(session, row, pin),
            }
        )
    for fact in facts:
        events.append({"at": iso_time(fact.at), "type": fact.fact, "updateId": fact.update_id})
    events.sort(key=lambda e: e["at"], reverse=True)
    return {
        "deviceId": device_id,
        "projectId": found.id,
        "pin": pin_json(pin) if pin is not None else None,
        "lastCheck": None
        if state is None
        else {
            "at": iso_time(state.last_seen),
            "firstSeen": iso_time(state.first_seen),
            "channel": state.channel,
            "platform": state.platform,
            "currentUpdateId": state.current_update_id,
            "embeddedUpdateId": state.embedded_update_id,
        },
        "timeline": events[:TIMELINE_LIMIT],
    }


def _why(session: Session, served: DeviceServed, pin: DevicePin | None) -> Any:
    """Why the device was served this update: the channel, whether a pin chose it and the
    rollout, as recorded when it was first served (``device_served.reason``; computed from
    the current state for records from before it was kept), its rollout bucket (stable) and
    the plan step the update is at now."""
    bucket = rollout_bucket(served.update_id, served.device_id)
    upd = session.get(Update, served.update_id)
    stored = served.reason or {}
    if upd is None and not stored:
        return {"deleted": True}
    channel = stored.get("channel", upd.channel.name if upd is not None else None)
    rollout = stored.get("rollout", upd.rollout if upd is not None else 100)
    pinned = stored.get("pinned", pin is not None and pin.channel == channel)
    plan = session.get(RolloutPlan, served.update_id)
    return {
        "channel": channel,
        "pinned": bool(pinned),
        "rolloutBucket": round(bucket * 100 / ROLLOUT_BUCKETS, 2),
        "rollout": rollout,
        "inRollout": rollout >= 100 or bucket < rollout * (ROLLOUT_BUCKETS // 100),
        "recorded": bool(stored),
        "deleted": upd is None,
        "planStep": None
        if plan is None
        else {"index": plan.step_index, "of": len(plan.steps), "status": plan.status},
    }
