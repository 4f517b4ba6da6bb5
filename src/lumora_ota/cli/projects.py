"""``lumora projects``: create, list and inspect projects."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer

from lumora_ota.cli.errors import CliError
from lumora_ota.cli.options import ApiKeyOption, JsonOption, ServerOption, open_api, pick_project
from lumora_ota.cli.output import note, print_fields, print_json, print_table

app = typer.Typer(
    rich_markup_mode="markdown",
    name="projects",
    help="Create, list, inspect and edit projects (name, auto-pause on failure).",
    no_args_is_help=True,
)


def slug_from_name(name: str) -> str:
    """A URL-friendly slug for a project name: ``"My App!"`` -> ``"my-app"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@app.command("create")
def create_project(
    name: Annotated[str, typer.Argument(help="Human-readable name.")],
    slug: Annotated[
        str | None, typer.Option("--slug", help="URL name [default: derived from NAME].")
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Create a project (needs an all-projects admin key).

    Example: lumora projects create "My App" --slug my-app
    """
    chosen_slug = slug or slug_from_name(name)
    if not chosen_slug:
        raise CliError("cannot derive a slug from that name: pass --slug", exit_code=2)
    from lumora_ota.api_models import ProjectAnswer

    body = {"name": name, "slug": chosen_slug}
    with open_api(server, api_key) as api:
        project = api.read(ProjectAnswer, "POST", "/projects", json=body)
    if as_json:
        print_json(project)
        return
    note(f"created project {project.slug} ({project.id})")


@app.command("list")
def list_projects(
    as_json: JsonOption = False,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List the projects this key can see.

    Example: lumora projects list --json
    """
    from lumora_ota.api_models import Items, ProjectAnswer

    with open_api(server, api_key) as api:
        items = api.read(Items[ProjectAnswer], "GET", "/projects").items
    if as_json:
        print_json(items)
        return
    if not items:
        note("no projects yet: create one with `lumora projects create NAME`")
        return
    print_table(
        ["slug", "name", "id", "channels", "created (UTC)"],
        (
            [
                p.slug,
                p.name,
                p.id,
                ", ".join(p.channels),
                p.created_at[:19].replace("T", " "),
            ]
            for p in items
        ),
    )


@app.command("view")
def view_project(
    project: Annotated[
        str | None,
        typer.Argument(
            envvar="LUMORA_PROJECT", help="Project slug or id (default: the configured project)."
        ),
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Show one project and its channels.

    Example: lumora projects view my-app
    """
    chosen = pick_project(project)
    from lumora_ota.api_models import ProjectAnswer

    with open_api(server, api_key) as api:
        found = api.read(ProjectAnswer, "GET", f"/projects/{chosen}")
    if as_json:
        print_json(found)
        return
    print_fields(
        [
            ("slug", found.slug),
            ("name", found.name),
            ("id", found.id),
            ("created", found.created_at),
            ("channels", ", ".join(found.channels)),
            ("auto-pause on failure", found.auto_pause_on_failure),
        ],
        title="Project",
    )


@app.command("edit")
def edit_project(
    project: Annotated[
        str | None,
        typer.Argument(
            envvar="LUMORA_PROJECT", help="Project slug or id (default: the configured project)."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="New display name.")] = None,
    auto_pause: Annotated[
        bool | None,
        typer.Option(
            "--auto-pause/--no-auto-pause",
            help="Set an update's rollout to 0 when its launch-failure rate crosses the"
            " threshold (see `lumora updates stats`).",
        ),
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Rename a project or switch auto-pause on failure on or off.

    Example: lumora projects edit my-app --auto-pause
    """
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    if auto_pause is not None:
        body["autoPauseOnFailure"] = auto_pause
    if not body:
        raise CliError(
            "nothing to change: pass --name and/or --auto-pause/--no-auto-pause", exit_code=2
        )
    chosen = pick_project(project)
    from lumora_ota.api_models import ProjectAnswer

    with open_api(server, api_key) as api:
        found = api.read(ProjectAnswer, "PATCH", f"/projects/{chosen}", json=body)
    if as_json:
        print_json(found)
        return
    note(
        f"project {found.slug}: name {found.name!r}, auto-pause on failure"
        f" {'on' if found.auto_pause_on_failure else 'off'}"
    )
