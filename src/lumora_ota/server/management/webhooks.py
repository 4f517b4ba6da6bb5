"""Management API: a project's webhooks, their deliveries and redelivery; starts the sender.

``POST /projects/{project}/webhooks {"url", "events": [...]}`` answers the webhook with its
signing ``secret``, shown this once. Deliveries are listed newest first with every attempt.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lumora_ota.api_models import (
    DeletedIdAnswer,
    DeliveryAnswer,
    Items,
    NewWebhookAnswer,
    WebhookAnswer,
)
from lumora_ota.domain.manifest import iso_time
from lumora_ota.server.context import AppContext, app_context
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
from lumora_ota.server.webhooks import TargetError, WebhookSender, check_target
from lumora_ota.store.apikeys import role_allows
from lumora_ota.store.models import Webhook, WebhookAttempt, WebhookDelivery, utcnow
from lumora_ota.store.webhooks import EVENT_TYPES, new_secret

router = APIRouter(tags=["webhooks"], route_class=GuardedJSONRoute)

MAX_WEBHOOKS_PER_PROJECT = 20


class WebhookRequest(RequestModel):
    """Body of ``POST /projects/{project}/webhooks``."""

    url: Annotated[str, Field(min_length=1, max_length=2000)]
    events: Annotated[list[str], Field(min_length=1, max_length=len(EVENT_TYPES))]


def shown_url(url: str, *, whole: bool) -> str:
    """``url`` whole, or only its origin followed by ``/…``: receivers such as Slack's take
    their credential in the path or query, which only admins (who manage webhooks) see."""
    if whole:
        return url
    parts = urlsplit(url)
    rest = parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{parts.scheme}://{parts.netloc}/" + ("…" if rest else "")


def webhook_json(hook: Webhook, *, whole_url: bool = True) -> dict[str, Any]:
    """The API shape of a webhook (never its secret; the URL whole only with
    ``whole_url``)."""
    return {
        "id": hook.id,
        "projectId": hook.project_id,
        "url": shown_url(hook.url, whole=whole_url),
        "events": list(hook.events),
        "createdAt": iso_time(hook.created_at),
    }


def _visible_hook(session: Session, principal: Principal, project: str, hook_id: str) -> Webhook:
    found = visible_project(session, principal, project)
    hook = session.get(Webhook, hook_id)
    if hook is None or hook.project_id != found.id:
        raise not_found(f"webhook {hook_id!r}")
    return hook


@router.post(
    "/projects/{project}/webhooks",
    status_code=201,
    summary="Create a webhook (answers its signing secret, once)",
    **answer(NewWebhookAnswer),
)
def create_webhook(
    project: str,
    body: WebhookRequest,
    request: Request,
    principal: CurrentPrincipal,
    session: WriteSession,
) -> dict[str, Any]:
    """422 for an unknown event type, a URL that is not http(s), that does not resolve, or
    that resolves to a private or loopback address (unless LUMORA_WEBHOOK_ALLOW_PRIVATE=1)."""
    found = visible_project(session, principal, project)
    principal.require("admin")
    unknown = sorted(set(body.events) - set(EVENT_TYPES))
    if unknown:
        raise ProblemError(422, f"unknown event types {unknown}; known: {', '.join(EVENT_TYPES)}")
    try:
        check_target(body.url, allow_private=app_context(request).settings.webhook_allow_private)
    except TargetError as exc:
        raise ProblemError(422, f"url: {exc}") from None
    count = session.scalar(
        select(func.count()).select_from(Webhook).where(Webhook.project_id == found.id)
    )
    if (count or 0) >= MAX_WEBHOOKS_PER_PROJECT:
        raise ProblemError(409, f"a project has at most {MAX_WEBHOOKS_PER_PROJECT} webhooks")
    hook = Webhook(
        project_id=found.id,
        url=body.url,
        events=sorted(set(body.events), key=EVENT_TYPES.index),
        secret=new_secret(),
        created_at=utcnow(),
    )
    session.add(hook)
    session.flush()
    record_audit(
        session,
        principal,
        "webhook.create",
        project_id=found.id,
        target=hook.id,
        detail={"url": hook.url, "events": hook.events},
    )
    session.commit()
    return {**webhook_json(hook), "secret": hook.secret}


@router.get(
    "/projects/{project}/webhooks",
    summary="A project's webhooks",
    **answer(Items[WebhookAnswer]),
)
def list_webhooks(
    project: str, principal: CurrentPrincipal, session: ReadSession
) -> dict[str, Any]:
    """``{"items": [webhook, ...]}`` (secrets are never shown again; keys below admin see
    each URL's origin only, as its path or query may hold the receiver's credential)."""
    found = visible_project(session, principal, project)
    hooks = session.scalars(
        select(Webhook).where(Webhook.project_id == found.id).order_by(Webhook.created_at)
    )
    whole = role_allows(principal.role, "admin")
    return {"items": [webhook_json(h, whole_url=whole) for h in hooks]}


@router.delete(
    "/projects/{project}/webhooks/{hook_id}",
    summary="Delete a webhook",
    **answer(DeletedIdAnswer),
)
def delete_webhook(
    project: str, hook_id: str, principal: CurrentPrincipal, session: WriteSession
) -> dict[str, Any]:
    """Delete it with its pending deliveries and their history."""
    hook = _visible_hook(session, principal, project, hook_id)
    principal.require("admin")
    record_audit(session, principal, "webhook.delete", project_id=hook.project_id, target=hook.id)
    session.delete(hook)
    session.commit()
    return {"deleted": hook_id}


def delivery_json(row: WebhookDelivery, attempts: list[WebhookAttempt]) -> dict[str, Any]:
    """The API shape of a delivery, with its attempts newest first."""
    return {
        "id": row.id,
        "eventId": row.event_id,
        "type": row.event_type,
        "status": row.status,
        "createdAt": iso_time(row.created_at),
        "attemptCount": row.attempts,
        "nextAttemptAt": iso_time(row.next_attempt_at) if row.status == "pending" else None,
        "deliveredAt": iso_time(row.delivered_at) if row.delivered_at else None,
        "attempts": [
            {
                "at": iso_time(a.at),
                "statusCode": a.status_code,
                "error": a.error,
                "durationMs": a.duration_ms,
            }
            for a in attempts
        ],
    }


@router.get(
    "/projects/{project}/webhooks/{hook_id}/deliveries",
    summary="A webhook's deliveries, newest first, with their attempts",
    **answer(Items[DeliveryAnswer]),
)
def list_deliveries(
    project: str,
    hook_id: str,
    principal: CurrentPrincipal,
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """``{"items": [delivery, ...]}``."""
    hook = _visible_hook(session, principal, project, hook_id)
    rows = list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == hook.id)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
            .limit(limit)
        )
    )
    attempts: dict[str, list[WebhookAttempt]] = {r.id: [] for r in rows}
    if rows:
        for attempt in session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(list(attempts)))
            .order_by(WebhookAttempt.id.desc())
        ):
            attempts[attempt.delivery_id].append(attempt)
    return {"items": [delivery_json(r, attempts[r.id]) for r in rows]}


@router.post(
    "/projects/{project}/webhooks/{hook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    summary="Send a delivery again now",
    **answer(DeliveryAnswer),
)
def redeliver(
    project: str,
    hook_id: str,
    delivery_id: str,
    request: Request,
    principal: CurrentPrincipal,
    session: WriteSession,
) -> dict[str, Any]:
    """Queue the delivery again (delivered or failed ones too) with a fresh retry time."""
    hook = _visible_hook(session, principal, project, hook_id)
    principal.require("publish")
    row = session.get(WebhookDelivery, delivery_id)
    if row is None or row.webhook_id != hook.id:
        raise not_found(f"delivery {delivery_id!r}")
    row.status = "pending"
    row.next_attempt_at = utcnow()
    row.retry_until = None
    row.claimed_until = None
    record_audit(session, principal, "webhook.redeliver", project_id=hook.project_id, target=row.id)
    session.commit()
    sender = app_context(request).webhooks
    if sender is not None:
        sender.wake()
    return delivery_json(row, [])


def install(ctx: AppContext, lifecycle: Lifecycle) -> None:
    """Start this process's webhook sender."""
    sender = WebhookSender(ctx.engine, ctx.sessions, ctx.settings)
    sender.watch_local_commits()
    ctx.webhooks = sender
    lifecycle.on_start(sender.start)
    lifecycle.on_stop(sender.stop)
