"""Webhook events: the outbox written inside the change's transaction, and their signature.

``emit(session, project_id, type, data)`` is the one way to report an event: it adds one
``webhook_deliveries`` row per webhook of the project that subscribed to ``type``, in the
caller's transaction, so the event exists exactly when the change commits (a change rolled
back sends nothing; a process killed after the commit sends it after its restart). The
delivery worker (``server/webhooks.py``) sends the rows.

Each delivery is ``POST`` of ``{"id", "type", "createdAt", "project", "data"}`` with
``Lumora-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``: the
scheme of Stripe's webhooks, so receivers can reject replays older than a few minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lumora_ota.domain.manifest import iso_time
from lumora_ota.store.models import Project, Update, Webhook, WebhookDelivery, utcnow

EVENT_TYPES: tuple[str, ...] = (
    "update.published",
    "update.rollout_changed",
    "update.rolled_back",
    "update.deleted",
    "update.paused",
    "update.flagged",
    "rollout_plan.advanced",
    "rollout_plan.halted",
    "channel.paused",
    "channel.resumed",
)
SIGNATURE_HEADER = "Lumora-Signature"
# Committed outbox rows are looked for by the worker; this flag on the connection lets the
# worker of this process start at once instead of at its next poll.
WEBHOOK_EMITTED = "lumora_webhook_emitted"


def new_secret() -> str:
    """A webhook signing secret: ``whsec_`` and 32 random bytes, URL-safe base64."""
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Lumora-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes) -> int:
    """The timestamp of a valid signature header; ``ValueError`` when it does not match.
    (For receivers and tests; they should also refuse old timestamps.)"""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    timestamp = int(parts.get("t", ""))
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, parts.get("v1", "")):
        raise ValueError("signature mismatch")
    return timestamp


def update_data(upd: Update) -> dict[str, Any]:
    """The common ``data`` fields of an update's events."""
    return {
        "updateId": upd.id,
        "groupId": upd.group_id,
        "channel": upd.channel.name,
        "platform": upd.platform,
        "runtimeVersion": upd.runtime_version,
        "rollout": upd.rollout,
    }


def rollout_changed(session: Session, upd: Update, previous: int) -> None:
    """Emit ``update.rollout_changed`` (and ``update.paused`` when it went to 0) for a
    rollout moved from ``previous`` to ``upd.rollout``; nothing when it did not move."""
    if previous == upd.rollout:
        return
    data = {**update_data(upd), "previousRollout": previous}
    emit(session, upd.project_id, "update.rollout_changed", data)
    if upd.rollout == 0:
        emit(session, upd.project_id, "update.paused", data)


def emit(session: Session, project_id: str, event_type: str, data: dict[str, Any]) -> int:
    """Queue ``event_type`` with ``data`` for every webhook of the project subscribed to it,
    in the session's transaction (commit is the caller's). Returns the rows added."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {event_type!r}")
    hooks = [
        hook
        for hook in session.scalars(select(Webhook).where(Webhook.project_id == project_id))
        if event_type in (hook.events or [])
    ]
    if not hooks:
        return 0
    project = session.get(Project, project_id)
    now = utcnow()
    event_id = str(uuid.uuid4())
    body = json.dumps(
        {
            "id": event_id,
            "type": event_type,
            "createdAt": iso_time(now),
            "project": project.slug if project is not None else project_id,
            "data": data,
        },
        separators=(",", ":"),
        sort_keys=True,
    )
    for hook in hooks:
        session.add(
            WebhookDelivery(
                webhook_id=hook.id,
                event_id=event_id,
                event_type=event_type,
                body=body,
                created_at=now,
                next_attempt_at=now,
                status="pending",
                attempts=0,
            )
        )
    session.flush()
    session.connection().info[WEBHOOK_EMITTED] = True
    return len(hooks)
