"""``lumora webhooks``: create, list, inspect deliveries of, redeliver and delete webhooks."""

from __future__ import annotations

from typing import Annotated

import typer

from lumora_ota.cli.errors import CliError
from lumora_ota.cli.options import (
    ApiKeyOption,
    JsonOption,
    ProjectOption,
    ServerOption,
    open_api,
    pick_project,
)
from lumora_ota.cli.output import note, print_fields, print_json, print_table

app = typer.Typer(
    rich_markup_mode="markdown",
    name="webhooks",
    help="Signed HTTP callbacks for update, rollout-plan and channel events.",
    no_args_is_help=True,
)

EVENTS = (
    "update.published, update.rollout_changed, update.rolled_back, update.deleted,"
    " update.paused, update.flagged, rollout_plan.advanced, rollout_plan.halted,"
    " channel.paused, channel.resumed"
)


@app.command("create")
def create(
    url: Annotated[str, typer.Argument(help="The receiver's http(s) URL.")],
    events: Annotated[
        str, typer.Option("--events", "-e", help=f"Comma-separated event types or 'all': {EVENTS}.")
    ] = "all",
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Create a webhook; prints its signing secret, which is shown this once.

    Example: lumora webhooks create https://ci.example.com/lumora -e update.published
    """
    chosen = pick_project(project)
    types = (
        [e.strip() for e in EVENTS.split(",")]
        if events.strip() == "all"
        else [e.strip() for e in events.split(",") if e.strip()]
    )
    if not types:
        raise CliError("--events: give at least one event type", exit_code=2)
    from lumora_ota.api_models import NewWebhookAnswer

    with open_api(server, api_key) as api:
        path = f"/projects/{chosen}/webhooks"
        result = api.read(NewWebhookAnswer, "POST", path, json={"url": url, "events": types})
    if as_json:
        print_json(result)
        return
    print_fields(
        [
            ("id", result.id),
            ("url", result.url),
            ("events", ", ".join(result.events)),
            ("secret", result.secret),
        ]
    )
    note("keep the secret: it is not shown again (it verifies the Lumora-Signature header)")


@app.command("list")
def list_hooks(
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """The project's webhooks.

    Example: lumora webhooks list --project my-app
    """
    chosen = pick_project(project)
    from lumora_ota.api_models import Items, WebhookAnswer

    with open_api(server, api_key) as api:
        result = api.read(Items[WebhookAnswer], "GET", f"/projects/{chosen}/webhooks")
    if as_json:
        print_json(result)
        return
    rows = [[h.id, h.url, ", ".join(h.events), h.created_at] for h in result.items]
    print_table(["id", "url", "events", "created"], rows)


@app.command("deliveries")
def deliveries(
    webhook_id: Annotated[str, typer.Argument(help="The webhook's id.")],
    limit: Annotated[int, typer.Option("--limit", min=1, max=200)] = 50,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """A webhook's deliveries, newest first: status, attempts, last answer.

    Example: lumora webhooks deliveries 6f1c2a9e-... --project my-app
    """
    chosen = pick_project(project)
    from lumora_ota.api_models import DeliveryAnswer, Items

    with open_api(server, api_key) as api:
        path = f"/projects/{chosen}/webhooks/{webhook_id}/deliveries"
        result = api.read(Items[DeliveryAnswer], "GET", path, params={"limit": limit})
    if as_json:
        print_json(result)
        return
    rows = []
    for d in result.items:
        last = d.attempts[0] if d.attempts else None
        rows.append(
            [
                d.id,
                d.type,
                d.status,
                d.attempt_count,
                (last.status_code or last.error) if last is not None else None,
                d.created_at[:19].replace("T", " "),
            ]
        )
    print_table(["delivery", "event", "status", "attempts", "last answer", "created"], rows)


@app.command("redeliver")
def redeliver(
    webhook_id: Annotated[str, typer.Argument(help="The webhook's id.")],
    delivery_id: Annotated[str, typer.Argument(help="The delivery's id (see deliveries).")],
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Send a delivery again now.

    Example: lumora webhooks redeliver 6f1c2a9e-... 0d4b7e21-... --project my-app
    """
    chosen = pick_project(project)
    path = f"/projects/{chosen}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"
    from lumora_ota.api_models import DeliveryAnswer

    with open_api(server, api_key) as api:
        result = api.read(DeliveryAnswer, "POST", path, json={})
    if as_json:
        print_json(result)
        return
    note(f"delivery {delivery_id} queued again")


@app.command("delete")
def delete(
    webhook_id: Annotated[str, typer.Argument(help="The webhook's id.")],
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Delete a webhook and its pending deliveries.

    Example: lumora webhooks delete 6f1c2a9e-... --project my-app
    """
    chosen = pick_project(project)
    from lumora_ota.api_models import DeletedIdAnswer

    with open_api(server, api_key) as api:
        path = f"/projects/{chosen}/webhooks/{webhook_id}"
        result = api.read(DeletedIdAnswer, "DELETE", path)
    if as_json:
        print_json(result)
        return
    note(f"deleted webhook {webhook_id}")
