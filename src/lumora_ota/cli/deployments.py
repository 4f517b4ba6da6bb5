"""``lumora deployments``: a project's channels (what devices subscribe to)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated

import typer

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
from lumora_ota.cli.output import confirm, note, print_fields, print_json, print_table

if TYPE_CHECKING:
    from lumora_ota.api_models import DeploymentDetail, DeploymentListItem, UpdateSummary
    from lumora_ota.cli.api import LumoraApi

app = typer.Typer(
    rich_markup_mode="markdown",
    name="deployments",
    help="Create, list, view, pause, resume and rename deployments (release channels).",
    no_args_is_help=True,
)

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


@app.command("create")
def create_deployment(
    name: Annotated[str, typer.Argument(help="Channel name, e.g. staging.")],
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Create a deployment (channel). Publishing to a new channel also creates it.

    Example: lumora deployments create staging --project my-app
    """
    from lumora_ota.api_models import DeploymentAnswer

    chosen = pick_project(project)
    body = {"project": chosen, "name": name}
    with open_api(server, api_key) as api:
        deployment = api.read(DeploymentAnswer, "POST", "/deployments", json=body)
    if as_json:
        print_json(deployment)
        return
    note(f"created deployment {deployment.name} ({deployment.id})")


@app.command("list")
def list_deployments(
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List a project's deployments and what their devices get: per platform and runtime
    version, the share of devices on each update (see `deployments view NAME`).

    Example: lumora deployments list --project my-app
    """
    chosen = pick_project(project)
    with open_api(server, api_key) as api:
        items = _list(api, chosen)
    if as_json:
        print_json(items)
        return
    if not items:
        note("no deployments yet: publish, or run `lumora deployments create NAME`")
        return
    print_table(
        ["name", "state", "devices get (platform/runtime: share update)"],
        ([d.name, "paused" if d.paused else "active", _serving_summary(d)] for d in items),
    )


@app.command("view")
def view_deployment(
    deployment: Annotated[str, typer.Argument(help="Deployment name or id.")],
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Show what a channel's devices get: per platform and runtime version, the rollout
    split (which update the in-rollout share gets, what the rest falls back to) and whether
    the channel is paused.

    Example: lumora deployments view production --project my-app
    """
    from lumora_ota.api_models import DeploymentDetail

    with open_api(server, api_key) as api:
        path = f"/deployments/{_resolve(api, project, deployment)}"
        found = api.read(DeploymentDetail, "GET", path)
    if as_json:
        print_json(found)
        return
    paused = found.paused
    print_fields(
        [
            ("deployment", found.name),
            ("id", found.id),
            (
                "state",
                "PAUSED: devices get no update (`lumora deployments resume`)"
                if paused
                else "active",
            ),
        ],
        title="Deployment",
    )
    rows = []
    for entry in found.serving:
        for share in entry.split:
            update = share.update
            rows.append(
                [
                    entry.platform,
                    entry.runtime_version,
                    f"{share.share:g}%",
                    update.id if update is not None else "no update",
                    _update_note(update),
                ]
            )
    if not rows:
        note("no update published to this deployment yet")
        return
    print_table(["platform", "runtime", "devices", "update", "rollout / message"], rows)


@app.command("pause")
def pause_deployment(
    deployment: Annotated[str, typer.Argument(help="Deployment name or id.")],
    yes: YesOption = False,
    non_interactive: NonInteractiveOption = False,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Pause a channel: devices asking for it get no update (they keep what they run) until
    it is resumed, as EAS's `channel:pause`.

    Example: lumora deployments pause production --project my-app --yes
    """
    _pause_or_resume(deployment, "pause", yes, non_interactive, as_json, project, server, api_key)


@app.command("resume")
def resume_deployment(
    deployment: Annotated[str, typer.Argument(help="Deployment name or id.")],
    yes: YesOption = False,
    non_interactive: NonInteractiveOption = False,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Resume a paused channel: it serves its updates again.

    Example: lumora deployments resume production --project my-app --yes
    """
    _pause_or_resume(deployment, "resume", yes, non_interactive, as_json, project, server, api_key)


def _pause_or_resume(
    deployment: str,
    action: str,
    yes: bool,
    non_interactive: bool,
    as_json: bool,
    project: str | None,
    server: str | None,
    api_key: str | None,
) -> None:
    from lumora_ota.api_models import DeploymentAnswer

    effect = "devices get no update" if action == "pause" else "devices get its updates again"
    with open_api(server, api_key) as api:
        deployment_id = _resolve(api, project, deployment)
        confirm(
            f"{action.capitalize()} deployment {deployment} ({effect})?",
            assume_yes=yes,
            non_interactive=non_interactive,
        )
        path = f"/deployments/{deployment_id}/{action}"
        result = api.read(DeploymentAnswer, "POST", path, json={})
    if as_json:
        print_json(result)
        return
    note(f"{'paused' if action == 'pause' else 'resumed'} deployment {result.name}: {effect}")


@app.command("edit")
def edit_deployment(
    deployment: Annotated[str, typer.Argument(help="Deployment id or name.")],
    name: Annotated[str, typer.Option("--name", help="New name.")],
    yes: YesOption = False,
    non_interactive: NonInteractiveOption = False,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Rename a deployment.

    Devices ask for a channel by name (the expo-channel-name their build was made with):
    after a rename, builds that ask for the old name get no update until they are rebuilt
    with the new one. The command warns and asks for confirmation (--yes off a terminal).

    Example: lumora deployments edit staging --name beta --project my-app --yes
    """
    from lumora_ota.api_models import DeploymentAnswer

    with open_api(server, api_key) as api:
        deployment_id = _resolve(api, project, deployment)
        note(
            f"warning: devices ask for a channel by name; builds configured for {deployment!r}"
            f" get no update after the rename until they are rebuilt with {name!r}"
        )
        confirm(
            f"Rename deployment {deployment} to {name}?",
            assume_yes=yes,
            non_interactive=non_interactive,
        )
        path = f"/deployments/{deployment_id}"
        result = api.read(DeploymentAnswer, "PUT", path, json={"name": name})
    if as_json:
        print_json(result)
        return
    note(f"renamed deployment {deployment} to {result.name}")


def _resolve(api: LumoraApi, project: str | None, deployment: str) -> str:
    """The id of the deployment named (or with id) ``deployment``."""
    if _UUID.match(deployment):
        return deployment
    return _id_by_name(api, pick_project(project), deployment)


def _list(api: LumoraApi, project: str) -> list[DeploymentListItem]:
    from lumora_ota.api_models import DeploymentListItem, Items

    params = {"project": project}
    return api.read(Items[DeploymentListItem], "GET", "/deployments", params=params).items


def _id_by_name(api: LumoraApi, project: str, name: str) -> str:
    for deployment in _list(api, project):
        if deployment.name == name:
            return deployment.id
    raise CliError(f"not found: no deployment named {name!r} in project {project}")


def _update_note(update: UpdateSummary | None) -> str:
    if update is None:
        return "devices keep what they run"
    if update.kind == "rollbackToEmbedded":
        return "roll back to embedded"
    return f"{update.rollout}%: {update.message or '-'}"


def _serving_summary(deployment: DeploymentDetail) -> str:
    parts = []
    for entry in deployment.serving:
        shares = ", ".join(
            f"{s.share:g}% {(s.update.id if s.update is not None else 'none')[:8]}"
            for s in entry.split
        )
        parts.append(f"{entry.platform}/{entry.runtime_version}: {shares}")
    if deployment.paused:
        return "paused: no update" + (f" ({'; '.join(parts)} when resumed)" if parts else "")
    return "; ".join(parts) or "-"
