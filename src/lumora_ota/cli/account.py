"""``lumora configure`` and ``lumora whoami``: where the CLI points and what its key may do."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from lumora_ota.cli.config import CliConfig, config_path, load_config, save_config
from lumora_ota.cli.errors import CliError
from lumora_ota.cli.options import ApiKeyOption, JsonOption, ServerOption, open_api
from lumora_ota.cli.output import note, print_fields, print_json, stdin_is_interactive


def mask_key(key: str | None) -> str | None:
    """An API key shortened for display: its first characters, the rest hidden."""
    if not key:
        return None
    return key[:10] + "…" if len(key) > 14 else "…"


def configure(
    server: Annotated[str | None, typer.Option("--server", help="Lumora server URL.")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="Management API key.")] = None,
    project: Annotated[str | None, typer.Option("--project", help="Default project.")] = None,
    show: Annotated[bool, typer.Option("--show", help="Only print the saved settings.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Save the server URL, API key and default project in the user's config dir (mode 0600).

    Without options it asks for each value. LUMORA_SERVER, LUMORA_API_KEY, LUMORA_PROJECT
    and the --server/--api-key/--project flags of other commands override the saved values.

    Example: lumora configure --server http://127.0.0.1:3002 --api-key lum_... --project my-app
    """
    current = load_config()
    if show:
        _print_config(current, as_json)
        return
    given = CliConfig(server=server, api_key=api_key, project=project)
    if given == CliConfig():
        if not stdin_is_interactive():
            raise CliError(
                "nothing to save: pass --server, --api-key and/or --project", exit_code=2
            )
        given = _ask(current)
    if given.server and not given.server.startswith(("http://", "https://")):
        raise CliError(f"server URL must start with http:// or https://: {given.server!r}")
    updated = current.overridden_by(given)
    save_config(updated)
    _print_config(updated, as_json)


def _ask(current: CliConfig) -> CliConfig:
    server = typer.prompt("Server URL", default=current.server or "http://127.0.0.1:3002")
    key_hint = f" [{mask_key(current.api_key)}]" if current.api_key else ""
    api_key = typer.prompt(f"API key{key_hint}", default="", hide_input=True, show_default=False)
    project = typer.prompt("Default project", default=current.project or "", show_default=True)
    return CliConfig(server=server, api_key=api_key or None, project=project or None)


def _print_config(config: CliConfig, as_json: bool) -> None:
    values: dict[str, Any] = {
        "path": str(config_path()),
        "server": config.server,
        "apiKey": mask_key(config.api_key),
        "project": config.project,
    }
    if as_json:
        print_json(values)
        return
    print_fields(list(values.items()), title="Lumora CLI settings")


def whoami(
    as_json: JsonOption = False,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Show which key the CLI uses and what it may do.

    Example: LUMORA_API_KEY=lum_... lumora whoami --server http://127.0.0.1:3002
    """
    from lumora_ota.api_models import WhoAmIAnswer

    with open_api(server, api_key) as api:
        me = api.read(WhoAmIAnswer, "GET", "/whoami")
        where = api.server
    if as_json:
        print_json(me)
        return
    names = [p.slug or p.id for p in me.projects]
    print_fields(
        [
            ("server", where),
            ("key", f"{me.name or '-'} ({me.key_id})"),
            ("role", me.role),
            ("scope", me.project_id or "all projects"),
            ("projects", ", ".join(names) or "none yet"),
        ]
    )
    if me.role == "read":
        note("this key can read only: publishing needs a publish or admin key")
