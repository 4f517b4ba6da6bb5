"""``lumora updates``: list, inspect, roll back, promote and tune published updates."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lumora_ota.cli.account import configure
from lumora_ota.cli.embedded import delta_fields
from lumora_ota.cli.errors import CliError
from lumora_ota.cli.options import (
    ApiKeyOption,
    JsonOption,
    NonInteractiveOption,
    ProjectOption,
    ServerOption,
    YesOption,
    open_api,
    pick_project,
)
from lumora_ota.cli.output import (
    confirm,
    human_bytes,
    note,
    print_fields,
    print_json,
    print_table,
    yes_no,
)
from lumora_ota.cli.stats_view import render_stats

if TYPE_CHECKING:
    from lumora_ota.api_models import GroupAnswer, RolledBackAnswer, UpdateAnswer
    from lumora_ota.cli.api import LumoraApi

PAGE_LIMIT = 200

app = typer.Typer(
    rich_markup_mode="markdown",
    name="updates",
    help="List, inspect, roll back, promote and tune published updates.",
    no_args_is_help=True,
)

UpdateIdArgument = Annotated[
    str,
    typer.Argument(
        help="A group id (what publish prints: acts on every platform's update) or one"
        " platform's update id.",
        metavar="GROUP_OR_ID",
    ),
]


class Target:
    """What a GROUP_OR_ID argument names: one update, or a publish group of updates."""

    def __init__(self, ref: str, updates: list[UpdateAnswer], group: GroupAnswer | None):
        self.ref = ref
        self.updates = updates
        self.group = group  # the group when ``ref`` is a group id

    @property
    def is_group(self) -> bool:
        return self.group is not None

    def describe(self) -> str:
        if self.group is None:
            u = self.updates[0]
            return f"update {self.ref} ({u.channel}, {u.platform})"
        platforms = ", ".join(u.platform for u in self.updates)
        channel = self.updates[0].channel if self.updates else None
        return f"group {self.ref} ({channel}: {platforms})"


def resolve(api: LumoraApi, ref: str) -> Target:
    """The update with id ``ref``, else the group with id ``ref``; a "not found" error naming
    both when neither exists."""
    from lumora_ota.api_models import GroupAnswer, UpdateAnswer
    from lumora_ota.cli.api import ApiError

    try:
        update = api.read(UpdateAnswer, "GET", f"/updates/{ref}")
        return Target(ref, [update], None)
    except ApiError as exc:
        if exc.status != 404:
            raise
    try:
        group = api.read(GroupAnswer, "GET", f"/groups/{ref}")
    except ApiError as exc:
        if exc.status != 404:
            raise
        raise CliError(f"not found: no update or update group {ref!r}") from None
    return Target(ref, group.updates, group)


def update_row(update: UpdateAnswer) -> list[Any]:
    """The table cells of one update (see ``UPDATE_COLUMNS``)."""
    return [
        update.id,
        update.group_id,
        update.channel,
        update.platform,
        update.runtime_version,
        f"{update.rollout}%",
        _state(update) + (", mandatory" if update.mandatory else ""),
        update.created_at[:16].replace("T", " "),
        update.message,
    ]


UPDATE_COLUMNS = [
    "id",
    "group",
    "channel",
    "platform",
    "runtime",
    "rollout",
    "state",
    "created",
    "message",
]


def _state(update: UpdateAnswer) -> str:
    if update.kind == "rollbackToEmbedded":
        return "roll back to embedded"
    return "rolled back" if update.status == "rolledBack" else update.status


@app.command("list")
def list_updates(
    channel: Annotated[str | None, typer.Option("--channel", "-c", help="Only this channel.")] = (
        None
    ),
    platform: Annotated[
        str | None, typer.Option("--platform", help="Only ios, android or web.")
    ] = None,
    runtime_version: Annotated[
        str | None, typer.Option("--runtime-version", help="Only this runtime version.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 20,
    cursor: Annotated[
        str | None,
        typer.Option("--cursor", help="Start after this point (the cursor a previous list gave)."),
    ] = None,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List updates, newest first, with their group ids. When more match than --limit,
    a note on stderr gives the --cursor of the next page.

    Example: lumora updates list --channel production --platform ios --limit 10

    Example: lumora updates list --limit 50 --cursor MjAyNi0xMS0zMFQxO...
    """
    from lumora_ota.api_models import UpdatePage

    chosen = pick_project(project)
    items: list[UpdateAnswer] = []
    with open_api(server, api_key) as api:
        while len(items) < limit:
            params = {
                "project": chosen,
                "channel": channel,
                "platform": platform,
                "runtimeVersion": runtime_version,
                "limit": min(PAGE_LIMIT, limit - len(items)),
                "cursor": cursor,
            }
            page = api.read(UpdatePage, "GET", "/updates", params=params)
            items.extend(page.items)
            cursor = page.next_cursor
            if not cursor:
                break
    if cursor:  # stderr: --json output stays the plain list it always was
        # Written as is, never wrapped: the cursor must stay one copyable token.
        sys.stderr.write(
            f"showing {len(items)}; more updates match: next page with --cursor {cursor}"
            " (or raise --limit)\n"
        )
    if as_json:
        print_json(items)
        return
    if not items:
        note("no updates match")
        return
    print_table(UPDATE_COLUMNS, (update_row(u) for u in items))


@app.command("view")
def view_update(
    update_id: UpdateIdArgument,
    as_json: JsonOption = False,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Show a group (its updates, one per platform) or one update: its fields, manifest,
    assets, metadata and extra.

    Example: lumora updates view 0b7e6c1e-3f2a-4a8e-9d55-2f7f0c1c9a10
    """
    from lumora_ota.api_models import DeltaAnswer, ExpoManifest

    with open_api(server, api_key) as api:
        target = resolve(api, update_id)
        if target.group is not None:
            if as_json:
                print_json(target.group)
                return
            _print_group(target.group)
            return
        update = target.updates[0]
        manifest = delta = None
        if update.kind != "rollbackToEmbedded":
            manifest = api.read(ExpoManifest, "GET", f"/manifests/{update_id}")
            delta = api.read(DeltaAnswer, "GET", f"/updates/{update_id}/delta")  # #10
    if as_json:
        print_json({**_as_json(update), "manifest": manifest, "delta": delta})
        return
    print_fields(
        [
            ("id", update.id),
            ("group", update.group_id),
            ("project", update.project_id),
            ("channel", update.channel),
            ("platform", update.platform),
            ("runtime version", update.runtime_version),
            ("state", _state(update)),
            ("rollout", f"{update.rollout}%"),
            ("mandatory", yes_no(update.mandatory)),
            ("created", update.created_at),
            ("message", update.message),
            ("source update", update.source_update_id),
            ("manifest URL", update.manifest_url),
        ],
        title="Update",
    )
    if delta is not None:  # delta updates (#10): download sizes, patches, bytes saved
        print_fields(delta_fields(delta), title="Delivery")
    launch = update.launch_asset
    assets = [a for a in [launch, *update.assets] if a is not None]
    if assets:
        print_table(
            ["", "key", "content type", "size", "sha256"],
            (
                [
                    "launch" if a is launch else "",
                    a.key,
                    a.content_type,
                    human_bytes(a.size or 0),
                    a.sha256,
                ]
                for a in assets
            ),
            title="Assets",
        )
    print_fields(
        [
            ("metadata", json.dumps(update.metadata or {})),
            ("extra", _short_json(update.extra or {})),
        ]
    )


def _as_json(update: UpdateAnswer) -> dict[str, Any]:
    """The update's members as the server sent them."""
    return update.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _print_group(group: GroupAnswer) -> None:
    print_fields(
        [
            ("group", group.id),
            ("project", group.project_id),
            ("created", group.created_at),
            ("message", group.message),
        ],
        title="Update group",
    )
    print_table(UPDATE_COLUMNS, (update_row(u) for u in group.updates))


@app.command("rollback")
def rollback_update(
    update_id: UpdateIdArgument,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="Re-publish this earlier update (or group: its update per platform)."
        ),
    ] = None,
    to_embedded: Annotated[
        bool,
        typer.Option("--to-embedded", help="Send devices back to the update built into the app."),
    ] = False,
    private_key: Annotated[
        Path | None,
        typer.Option(
            "--private-key",
            help="Sign what this creates with this PEM key (publisher-held signing keys).",
        ),
    ] = None,
    yes: YesOption = False,
    non_interactive: NonInteractiveOption = False,
    as_json: JsonOption = False,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Roll back a group (every platform) or one update, and move the devices that run it.

    Without options the update published before it is republished as a new update (devices
    launch only an update newer than the one they run, so this is how they move back), or
    devices return to the embedded update when there was none; --to republishes a chosen
    earlier update; --to-embedded tells devices to run the update embedded in the app binary.
    For a group, --to may name a group too: each platform goes back to that group's update of
    the same platform. (To stop an update spreading without taking it back from devices that
    have it, pause it: lumora updates edit ID --rollout 0 --yes.)

    With --json: the result for one update id; a list of results for a group.

    Example: lumora updates rollback 0b7e6c1e-... --to 5d1f2a9b-... --yes
    """
    from lumora_ota.api_models import RolledBackAnswer, UpdateAnswer

    if to is not None and to_embedded:
        raise CliError("choose either --to or --to-embedded, not both", exit_code=2)
    with open_api(server, api_key) as api:
        target = resolve(api, update_id)
        bodies: list[dict[str, Any]] = []
        what = "the previous update"
        earlier = resolve(api, to) if to is not None else None
        for update in target.updates:
            if earlier is not None:
                match = _same_platform(earlier, update)
                bodies.append({"to": match.id})
                what = f"update {to}"
            elif to_embedded:
                bodies.append({"toEmbedded": True})
                what = "the embedded update"
            else:
                bodies.append({})
        confirm(
            f"Roll back {target.describe()} to {what}?",
            assume_yes=yes,
            non_interactive=non_interactive,
        )
        # {} answers the update with its replacement (200); the other forms the new update.
        results: list[RolledBackAnswer | UpdateAnswer] = [
            api.read(
                RolledBackAnswer if not body else UpdateAnswer,
                "POST",
                f"/updates/{u.id}/rollback",
                json=body,
            )
            for u, body in zip(target.updates, bodies, strict=True)
        ]
        created = [_created(r, u) for r, u in zip(results, target.updates, strict=True)]
        if private_key is not None:
            _sign_created(api, private_key, created)
        else:
            _note_unsigned(api, created)
    if as_json:
        print_json(results if target.is_group else results[0])
        return
    rows: list[list[Any]] = []
    for update, result in zip(target.updates, results, strict=True):
        rows.append(update_row(result))
        moved = _created(result, update)
        if isinstance(result, RolledBackAnswer) and moved is not None:
            rows.append(update_row(moved))
        if moved is None:
            note(f"rolled back {update.id}: no device needed moving (a newer update replaces it)")
        else:
            note(f"rolled back {update.id}: devices now get {what} (new update {moved.id})")
    print_table(UPDATE_COLUMNS, rows)


def _same_platform(earlier: Target, update: UpdateAnswer) -> UpdateAnswer:
    for candidate in earlier.updates:
        if candidate.platform == update.platform:
            return candidate
    raise CliError(f"{earlier.describe()} has no {update.platform} update to roll back to")


@app.command("promote")
def promote_update(
    update_id: UpdateIdArgument,
    to_channel: Annotated[
        str, typer.Option("--to-channel", help="Channel to publish the same update to.")
    ],
    rollout: Annotated[
        int,
        typer.Option("--rollout", min=0, max=100, help="Percent of devices that get the copy."),
    ] = 100,
    mandatory: Annotated[
        bool | None,
        typer.Option(
            "--mandatory/--no-mandatory", help="Mandatory flag of the copy [default: as is]."
        ),
    ] = None,
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="Message of the copy [default: same].")
    ] = None,
    private_key: Annotated[
        Path | None,
        typer.Option(
            "--private-key",
            help="Sign what this creates with this PEM key (publisher-held signing keys).",
        ),
    ] = None,
    yes: YesOption = False,
    non_interactive: NonInteractiveOption = False,
    as_json: JsonOption = False,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Publish an existing group (every platform) or update to another channel; no files are
    uploaded again.

    With --json: the new update for one update id; a list of new updates for a group.

    Example: lumora updates promote 0b7e6c1e-... --to-channel production --rollout 10 --yes
    """
    from lumora_ota.api_models import UpdateAnswer

    body: dict[str, Any] = {"channel": to_channel, "rollout": rollout}
    if mandatory is not None:
        body["mandatory"] = mandatory
    if message is not None:
        body["message"] = message
    with open_api(server, api_key) as api:
        target = resolve(api, update_id)
        # Check the whole group before changing anything: half a promoted group is worse
        # than none.
        stale = [u for u in target.updates if u.status != "active"]
        if stale:
            names = ", ".join(f"{u.platform} {u.id}" for u in stale)
            raise CliError(f"cannot promote {target.describe()}: rolled back ({names})")
        confirm(
            f"Promote {target.describe()} to {to_channel} at {rollout}%?",
            assume_yes=yes,
            non_interactive=non_interactive,
        )
        results = [
            api.read(UpdateAnswer, "POST", f"/updates/{u.id}/promote", json=body)
            for u in target.updates
        ]
        if private_key is not None:
            _sign_created(api, private_key, list(results))
        else:
            _note_unsigned(api, list(results))
    if as_json:
        print_json(results if target.is_group else results[0])
        return
    note(f"promoted {target.describe()} to {to_channel}")
    print_table(UPDATE_COLUMNS, [update_row(r) for r in results])


@app.command("edit")
def edit_update(
    update_id: UpdateIdArgument,
    rollout: Annotated[
        int | None,
        typer.Option("--rollout", min=0, max=100, help="Percent of devices (0 pauses it)."),
    ] = None,
    mandatory: Annotated[
        bool | None,
        typer.Option("--mandatory/--no-mandatory", help="Whether clients must apply it now."),
    ] = None,
    yes: YesOption = False,
    non_interactive: NonInteractiveOption = False,
    as_json: JsonOption = False,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Change the rollout percentage (raise, lower, or pause at 0) or mandatory flag of a
    group (every platform at once) or of one update.

    Lowering or pausing a rollout only stops the update spreading: devices that already run
    it keep it (as in EAS). To move them off it, use lumora updates rollback.

    With --json: the update for one update id; the group (with its updates) for a group.

    It changes what devices get, so it asks first (--yes off a terminal).

    Example: lumora updates edit 0b7e6c1e-... --rollout 50 --yes
    """
    body: dict[str, Any] = {}
    if rollout is not None:
        body["rollout"] = rollout
    if mandatory is not None:
        body["mandatory"] = mandatory
    if not body:
        raise CliError("nothing to change: pass --rollout and/or --mandatory", exit_code=2)
    change = ", ".join(
        f"rollout {rollout}%" if k == "rollout" else f"mandatory {yes_no(mandatory)}" for k in body
    )
    from lumora_ota.api_models import GroupAnswer, UpdateAnswer

    with open_api(server, api_key) as api:
        target = resolve(api, update_id)
        confirm(
            f"Set {change} on {target.describe()}?",
            assume_yes=yes,
            non_interactive=non_interactive,
        )
        result: GroupAnswer | UpdateAnswer
        if target.is_group:
            result = api.read(GroupAnswer, "PATCH", f"/groups/{update_id}", json=body)
            rows = result.updates
        else:
            result = api.read(UpdateAnswer, "PATCH", f"/updates/{update_id}", json=body)
            rows = [result]
    if as_json:
        print_json(result)
        return
    print_table(UPDATE_COLUMNS, [update_row(u) for u in rows])


@app.command("delete")
def delete_update(
    update_id: UpdateIdArgument,
    yes: YesOption = False,
    non_interactive: NonInteractiveOption = False,
    as_json: JsonOption = False,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Delete a group (every platform) or one update. Devices move to what remains eligible
    on the channel (the update before it, or the app's embedded update). Files stay stored:
    other updates may share them.

    Example: lumora updates delete 0b7e6c1e-... --yes
    """
    from lumora_ota.api_models import DeletedAnswer

    with open_api(server, api_key) as api:
        target = resolve(api, update_id)
        confirm(f"Delete {target.describe()}?", assume_yes=yes, non_interactive=non_interactive)
        kind = "groups" if target.is_group else "updates"
        result = api.read(DeletedAnswer, "DELETE", f"/{kind}/{update_id}")
    if as_json:
        print_json(result)
        return
    note(f"deleted {target.describe()}: {', '.join(result.deleted)}")


@app.command("stats")
def update_stats(
    update: Annotated[str | None, typer.Option("--update", help="Only this update.")] = None,
    channel: Annotated[str | None, typer.Option("--channel", "-c", help="Only this channel.")] = (
        None
    ),
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601 start.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601 end.")] = None,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Show update statistics: totals and a daily series.

    Example: lumora updates stats --update 0b7e6c1e-... --json
    """
    from lumora_ota.api_models import StatsReport

    chosen = pick_project(project)
    params = {
        "project": chosen,
        "channel": channel,
        "update": update,
        "since": since,
        "until": until,
    }
    with open_api(server, api_key) as api:
        stats = api.read(StatsReport, "GET", "/stats", params=params)
    if as_json:
        print_json(stats)
        return
    render_stats(stats)


def _short_json(value: Any, limit: int = 400) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# The seed's spelling of ``lumora configure``.
app.command("configure")(configure)


def _created(result: RolledBackAnswer | UpdateAnswer, update: UpdateAnswer) -> UpdateAnswer | None:
    """The update (or marker) a rollback created, None when it created none."""
    from lumora_ota.api_models import RolledBackAnswer

    if isinstance(result, RolledBackAnswer):
        return result.replacement
    return result if result.id != update.id else None


def _note_unsigned(api: Any, created: list[UpdateAnswer | None]) -> None:
    """Tell the user when the copies just created wait for a publisher's signature."""
    from lumora_ota.cli.publisher_signing import note_awaiting_signature

    made = [u for u in created if u is not None]
    if made:
        note_awaiting_signature(api, made[0].project_id, [u.id for u in made])


def _sign_created(api: Any, private_key: Path, created: list[UpdateAnswer | None]) -> None:
    """Sign, with the publisher's key, the copies and markers just created."""
    from lumora_ota.cli.publisher_signing import sign_new_updates

    try:
        pem = private_key.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read the private key {private_key}: {exc.strerror or exc}") from exc
    sign_new_updates(api, pem, [u for u in created if u is not None])


# ---------------------------------------------------------------- rollout plans (issue 19)


@app.command("plan")
def plan_update(
    update_id: UpdateIdArgument,
    steps: Annotated[
        str | None,
        typer.Option("--steps", help="Rollout percentages, rising: e.g. 1,10,50,100."),
    ] = None,
    step: Annotated[
        str, typer.Option("--step", help="Soak time per step: 90s, 30m, 1h, 2d.")
    ] = "1h",
    min_launches: Annotated[
        int,
        typer.Option("--min-launches", min=0, help="Launches needed to advance (0: time alone)."),
    ] = 0,
    max_failure_rate: Annotated[
        str,
        typer.Option("--max-failure-rate", help="Halt above this launch failure rate (2%)."),
    ] = "2%",
    clear: Annotated[bool, typer.Option("--clear", help="Remove the plan.")] = False,
    as_json: JsonOption = False,
    yes: YesOption = False,
    non_interactive: NonInteractiveOption = False,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Show, set or clear the rollout plan of a group (every platform) or one update.

    With --steps the rollout goes to the first step now, then the server raises it one step
    per --step of soak time while the gate holds (at least --min-launches launches, failure
    rate at most --max-failure-rate among devices served the update); it halts the moment the
    failure rate crosses the maximum (see lumora updates resume). Without options it shows
    the plan. Setting or clearing a plan changes what devices get: it asks first (--yes off a
    terminal).

    Example: lumora updates plan 0b7e6c1e-... --steps 1,10,50,100 --step 1h --max-failure-rate 2%
    --yes
    """
    from lumora_ota.api_models import ClearedAnswer, Items, PlanAnswer
    from lumora_ota.cli.plans import plan_body, print_plans

    if clear and steps is not None:
        raise CliError("choose either --steps or --clear, not both", exit_code=2)
    path = f"/updates/{update_id}/rollout-plan"
    if clear or steps is not None:
        action = "Clear the rollout plan of" if clear else f"Start rollout plan {steps} on"
        confirm(f"{action} {update_id}?", assume_yes=yes, non_interactive=non_interactive)
    with open_api(server, api_key) as api:
        if clear:
            cleared = api.read(ClearedAnswer, "DELETE", path)
            if as_json:
                print_json(cleared)
            else:
                note(f"cleared the rollout plan of {', '.join(cleared.cleared) or '-'}")
            return
        if steps is not None:
            body = plan_body(steps, step, min_launches, max_failure_rate)
            result = api.read(Items[PlanAnswer], "PUT", path, json=body)
        else:
            result = api.read(Items[PlanAnswer], "GET", path)
    if as_json:
        print_json(result)
        return
    items = result.items
    if not items:
        note(f"{update_id} has no rollout plan")
        return
    print_plans(items)


@app.command("resume")
def resume_plan(
    update_id: UpdateIdArgument,
    as_json: JsonOption = False,
    yes: YesOption = False,
    non_interactive: NonInteractiveOption = False,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Continue a halted rollout plan from its current step (its soak time starts again; a
    paused update goes back to that step's rollout). Asks first (--yes off a terminal).

    Example: lumora updates resume 0b7e6c1e-... --yes
    """
    from lumora_ota.api_models import Items, PlanAnswer
    from lumora_ota.cli.plans import print_plans

    confirm(
        f"Resume the halted rollout plan of {update_id}?",
        assume_yes=yes,
        non_interactive=non_interactive,
    )
    with open_api(server, api_key) as api:
        path = f"/updates/{update_id}/rollout-plan/resume"
        result = api.read(Items[PlanAnswer], "POST", path, json={})
    if as_json:
        print_json(result)
        return
    print_plans(result.items)
