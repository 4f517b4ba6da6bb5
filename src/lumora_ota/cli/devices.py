"""``lumora devices``: pin devices to a channel, unpin them, list pins, view a device."""

from __future__ import annotations

from typing import Annotated, Any

import typer

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
    name="devices",
    help="Pin devices (QA, beta) to a channel and view what a device was served and why.",
    no_args_is_help=True,
)

DeviceArgument = Annotated[
    str, typer.Argument(help="The device id (eas-client-id, or the check API's deviceId).")
]


@app.command("pin")
def pin(
    device: DeviceArgument,
    channel: Annotated[str, typer.Option("--channel", "-c", help="The channel it gets.")],
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Serve the device this channel whatever channel it asks for.

    Example: lumora devices pin 7f0c...-qa-phone --channel staging
    """
    chosen = pick_project(project)
    with open_api(server, api_key) as api:
        result = api.put(f"/projects/{chosen}/devices/{device}", {"channel": channel})
    if as_json:
        print_json(result)
        return
    note(f"device {device} now gets channel {result.get('channel')}")


@app.command("unpin")
def unpin(
    device: DeviceArgument,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """The device gets the channel it asks for again.

    Example: lumora devices unpin qa-phone-1 --project my-app
    """
    chosen = pick_project(project)
    with open_api(server, api_key) as api:
        result = api.delete(f"/projects/{chosen}/devices/{device}")
    if as_json:
        print_json(result)
        return
    note(f"device {device} unpinned")


@app.command("list")
def list_pins(
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """The project's pinned devices.

    Example: lumora devices list --project my-app
    """
    chosen = pick_project(project)
    with open_api(server, api_key) as api:
        result = api.get(f"/projects/{chosen}/devices")
    if as_json:
        print_json(result)
        return
    rows = [[p.get("deviceId"), p.get("channel"), p.get("createdAt")] for p in result["items"]]
    print_table(["device", "channel", "pinned at"], rows)


@app.command("view")
def view(
    device: DeviceArgument,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """The device's pin, last check and timeline (newest first): updates served and why,
    downloads, installs, launches, failures and rollbacks.

    Example: lumora devices view qa-phone-1 --project my-app
    """
    chosen = pick_project(project)
    with open_api(server, api_key) as api:
        result = api.get(f"/projects/{chosen}/devices/{device}")
    if as_json:
        print_json(result)
        return
    last: dict[str, Any] = result.get("lastCheck") or {}
    pinned = result.get("pin") or {}
    print_fields(
        [
            ("device", result.get("deviceId")),
            ("pinned to", pinned.get("channel")),
            ("last check", last.get("at")),
            ("channel", last.get("channel")),
            ("platform", last.get("platform")),
            ("runs", last.get("currentUpdateId")),
        ]
    )
    rows = []
    for event in result.get("timeline") or []:
        why = event.get("why") or {}
        reason = None
        if why:
            parts = [f"channel {why.get('channel')}" + (" (pinned)" if why.get("pinned") else "")]
            parts.append(f"bucket {why.get('rolloutBucket')} < rollout {why.get('rollout')}%")
            step = why.get("planStep")
            if step:
                parts.append(f"plan step {int(step['index']) + 1}/{step['of']}")
            reason = ", ".join(parts)
        rows.append([event.get("at"), event.get("type"), event.get("updateId"), reason])
    print_table(["at", "event", "update", "why"], rows)
