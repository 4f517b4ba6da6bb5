"""Entry point of the ``lumora`` command.

Every failure ends as one ``error: <message>`` line on stderr: ``CliError`` (API and input
problems) exits 1, usage errors exit 2, and anything unexpected exits 1 too, without
a traceback unless ``LUMORA_DEBUG`` is set.

Commands are loaded lazily: ``lumora publish`` imports the publish module and what it needs,
not every command's (``keys`` alone pulls in the domain layer, ``serve`` the settings).
``lumora --help`` loads them all, to list them with their help.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer
from typer.core import TyperGroup
from typer.exceptions import Abort, TyperException

from lumora_ota.cli.errors import CliError, one_line

if TYPE_CHECKING:
    # Annotations only (nothing private is used at run time): Typer >= 0.26 builds its
    # groups on a vendored Click and exports no public name for its command type.
    from typer._click import Command, Context

MARKUP: Final = "markdown"

# Every top-level command, in the order ``lumora --help`` lists them: the module and the
# attribute holding it, a Typer app (a group of commands) or a command function.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("lumora_ota.cli.serve", "serve"),
    "publish": ("lumora_ota.cli.publish", "publish"),
    "configure": ("lumora_ota.cli.account", "configure"),
    "whoami": ("lumora_ota.cli.account", "whoami"),
    "projects": ("lumora_ota.cli.projects", "app"),
    "deployments": ("lumora_ota.cli.deployments", "app"),
    "updates": ("lumora_ota.cli.updates", "app"),
    "keys": ("lumora_ota.cli.keys", "app"),
    "audit": ("lumora_ota.cli.audit", "audit"),
    "codesigning": ("lumora_ota.cli.codesigning", "app"),
    "embedded": ("lumora_ota.cli.embedded", "app"),  # delta updates: embedded bundles (#10)
    "webhooks": ("lumora_ota.cli.webhooks", "app"),  # issue 19
    "devices": ("lumora_ota.cli.devices", "app"),  # issue 19: pins and timelines
}


def load_command(name: str) -> Command:
    """Import top-level command ``name`` and build its Click command, as ``add_typer`` or
    ``app.command`` on the root app would have."""
    module_name, attribute = COMMANDS[name]
    target = getattr(importlib.import_module(module_name), attribute)
    if isinstance(target, typer.Typer):
        return typer.main.get_group(target)
    single = typer.Typer(rich_markup_mode=MARKUP, add_completion=False)
    single.command(name)(target)
    return typer.main.get_command(single)


class LazyCommands(MutableMapping[str, "Command"]):
    """A group's ``commands``: names known up front, each command built on first use."""

    def __init__(self, loaded: MutableMapping[str, Command]) -> None:
        self._loaded = dict(loaded)
        self._names = [*COMMANDS, *(n for n in loaded if n not in COMMANDS)]

    def __getitem__(self, name: str) -> Command:
        if name not in self._loaded:
            if name not in COMMANDS:
                raise KeyError(name)
            self._loaded[name] = load_command(name)
        return self._loaded[name]

    def __setitem__(self, name: str, command: Command) -> None:
        if name not in self._names:
            self._names.append(name)
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        self._names.remove(name)
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names


class LazyGroup(TyperGroup):
    """The root group: lists every command without importing it (typo suggestions too),
    and imports one only when it runs or its help is shown."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = LazyCommands(self.commands)

    def list_commands(self, ctx: Context) -> list[str]:
        return list(self.commands)  # names only (TyperGroup's would build every command)


app = typer.Typer(
    cls=LazyGroup,
    rich_markup_mode=MARKUP,
    name="lumora",
    help="Lumora OTA: publish and manage over-the-air updates, or run the server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from lumora_ota import __version__

        sys.stdout.write(f"lumora {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
    non_interactive: Annotated[
        bool,
        typer.Option(
            "--non-interactive",
            help="Never prompt (CI): commands that need a confirmation refuse unless given"
            " --yes. Same as LUMORA_NON_INTERACTIVE=1 or each command's --non-interactive.",
        ),
    ] = False,
) -> None:
    """Lumora OTA: publish and manage over-the-air updates, or run the server."""
    if non_interactive:
        # Every confirming command reads this variable through its own --non-interactive.
        os.environ["LUMORA_NON_INTERACTIVE"] = "1"


def _fail(message: str, exit_code: int) -> int:
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()
    return exit_code


def run(args: list[str] | None = None) -> int:
    """Run the CLI with ``args`` and return its exit code, reporting errors on one line."""
    try:
        result = app(args=args, prog_name="lumora", standalone_mode=False)
    except CliError as exc:
        return _fail(exc.message, exc.exit_code)
    except TyperException as exc:  # Click-style usage errors (Typer vendors Click)
        return _fail(exc.format_message(), exc.exit_code)
    except Abort:
        return _fail("aborted", 1)
    except Exception as exc:
        if os.environ.get("LUMORA_DEBUG"):
            raise
        return _fail(f"unexpected {type(exc).__name__}: {exc}", 1)
    return result if isinstance(result, int) else 0


def main() -> None:
    """Run the CLI (the ``lumora`` console script)."""
    sys.exit(run())
