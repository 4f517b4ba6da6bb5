"""``lumora devices``: pin devices to a channel, unpin them, list pins, view a device."""

from __future__ import annotations

from typing import Annotated

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
    from lumora_ota.api_models import PinAnswer

    with open_api(server, api_key) as api:
        path = f"/projects/{chosen}/devices/{device}"
        result = api.read(PinAnswer, "PUT", path, json={"channel": channel})
    if as_json:
        print_json(result)
        return
    note(f"device {device} now gets channel {result.channel}")


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
    from lumora_ota.api_models import UnpinnedAnswer

    with open_api(server, api_key) as api:
        result = api.read(UnpinnedAnswer, "DELETE", f"/projects/{chosen}/devices/{device}")
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
    from lumora_ota.api_models import Items, PinAnswer

    with open_api(server, api_key) as api:
        result = api.read(Items[PinAnswer], "GET", f"/projects/{chosen}/devices")
    if as_json:
        print_json(result)
        return
    rows = [[p.device_id, p.channel, p.created_at] for p in result.items]
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
    from lumora_ota.api_models import DeviceTimelineAnswer

    with open_api(server, api_key) as api:
        path = f"/projects/{chosen}/devices/{device}"
        result = api.read(DeviceTimelineAnswer, "GET", path)
    if as_json:
        print_json(result)
        return
    last = result.last_check
    print_fields(
        [
            ("device", result.device_id),
            ("pinned to", result.pin.channel if result.pin else None),
            ("last check", last.at if last else None),
            ("channel", last.channel if last else None),
            ("platform", last.platform if last else None),
            ("runs", last.current_update_id if last else None),
        ]
    )
    rows = []
    for event in result.timeline:
        why = event.why
        reason = None
        if why is not None:
            parts = [f"channel {why.channel}" + (" (pinned)" if why.pinned else "")]
            parts.append(f"bucket {why.rollout_bucket} < rollout {why.rollout}%")
            if why.plan_step is not None:
                parts.append(f"plan step {why.plan_step.index + 1}/{why.plan_step.of}")
            reason = ", ".join(parts)
        rows.append([event.at, event.type, event.update_id, reason])
    print_table(["at", "event", "update", "why"], rows)
