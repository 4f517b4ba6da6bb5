"""Options shared by every command that talks to a server, and how they become a client.

Each option reads its ``LUMORA_*`` environment variable through Click, so "flag over
environment" is Click's job and "environment over config file" is ``resolve_config``'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from lumora_ota.cli.config import CliConfig, resolve_config
from lumora_ota.cli.errors import CliError

if TYPE_CHECKING:
    from lumora_ota.cli.api import LumoraApi

CONNECTION_PANEL = "Connection"

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="LUMORA_SERVER",
        show_envvar=True,
        help="Lumora server URL [default: config file, else http://127.0.0.1:3002].",
        rich_help_panel=CONNECTION_PANEL,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="LUMORA_API_KEY",
        show_envvar=True,
        help="Management API key [default: config file].",
        rich_help_panel=CONNECTION_PANEL,
    ),
]
ProjectOption = Annotated[
    str | None,
    typer.Option(
        "--project",
        "-p",
        envvar="LUMORA_PROJECT",
        show_envvar=True,
        help="Project slug or id [default: config file].",
        rich_help_panel=CONNECTION_PANEL,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]
YesOption = Annotated[
    bool,
    typer.Option(
        "--yes", "-y", help="Do not ask for confirmation (required when no terminal can ask)."
    ),
]
NonInteractiveOption = Annotated[
    bool,
    typer.Option(
        "--non-interactive",
        envvar="LUMORA_NON_INTERACTIVE",
        show_envvar=True,
        help="Never prompt (CI): refuse what needs a confirmation unless --yes is given.",
    ),
]


def open_api(server: str | None, api_key: str | None) -> LumoraApi:
    """A client for the server and key chosen by flags, environment and config file.

    The client module (and with it httpx) is imported here, not at start-up, so commands
    that never reach a server, and ``--help``, do not pay for it.
    """
    from lumora_ota.cli.api import LumoraApi

    config = resolve_config(CliConfig(server=server, api_key=api_key))
    assert config.server is not None  # resolve_config always supplies a default server
    return LumoraApi(config.server, config.api_key)


def pick_project(project: str | None) -> str:
    """The project chosen by flag, environment or config file; an error when none is."""
    chosen = resolve_config(CliConfig(project=project)).project
    if not chosen:
        raise CliError(
            "no project: pass --project, set LUMORA_PROJECT or run `lumora configure`",
            exit_code=2,
        )
    return chosen
