"""``lumora deployments``: a project's channels (what devices subscribe to)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

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
from lumora_ota.cli.output import note, print_json, print_table

if TYPE_CHECKING:
    from lumora_ota.cli.api import LumoraApi

app = typer.Typer(
    rich_markup_mode="markdown",
    name="deployments",
    help="Create, list and rename deployments (release channels).",
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
    chosen = pick_project(project)
    with open_api(server, api_key) as api:
        deployment = api.post("/deployments", {"project": chosen, "name": name})
    if as_json:
        print_json(deployment)
        return
    note(f"created deployment {deployment.get('name')} ({deployment.get('id')})")


@app.command("list")
def list_deployments(
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List a project's deployments and the update each currently serves.

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
        ["name", "id", "serving (platform/runtime: update, rollout)"],
        ([d.get("name"), d.get("id"), _current_summary(d.get("current"))] for d in items),
    )


@app.command("edit")
def edit_deployment(
    deployment: Annotated[str, typer.Argument(help="Deployment id or name.")],
    name: Annotated[str, typer.Option("--name", help="New name.")],
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Rename a deployment.

    Example: lumora deployments edit staging --name beta --project my-app
    """
    with open_api(server, api_key) as api:
        deployment_id = deployment
        if not _UUID.match(deployment):
            deployment_id = _id_by_name(api, pick_project(project), deployment)
        result = api.put(f"/deployments/{deployment_id}", {"name": name})
    if as_json:
        print_json(result)
        return
    note(f"renamed deployment {deployment} to {result.get('name')}")


def _list(api: LumoraApi, project: str) -> list[dict[str, Any]]:
    page = api.get("/deployments", project=project)
    items = page.get("items") if isinstance(page, dict) else None
    if not isinstance(items, list):
        raise CliError("the server's answer has no items list")
    return [d for d in items if isinstance(d, dict)]


def _id_by_name(api: LumoraApi, project: str, name: str) -> str:
    for deployment in _list(api, project):
        if deployment.get("name") == name:
            return str(deployment.get("id"))
    raise CliError(f"not found: no deployment named {name!r} in project {project}")


def _current_summary(current: Any) -> str:
    if not isinstance(current, dict) or not current:
        return "-"
    parts = []
    for platform, by_runtime in sorted(current.items()):
        if not isinstance(by_runtime, dict):
            continue
        for runtime, update in sorted(by_runtime.items()):
            if isinstance(update, dict):
                parts.append(
                    f"{platform}/{runtime}: {str(update.get('id'))[:8]}, {update.get('rollout')}%"
                )
    return "; ".join(parts) or "-"
