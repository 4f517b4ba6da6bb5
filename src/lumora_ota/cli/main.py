"""Entry point of the ``lumora`` command.

Every failure ends as one ``error: <message>`` line on stderr: ``CliError`` (API and input
problems) exits 1, usage errors exit 2, and anything unexpected exits 1 too, without
a traceback unless ``LUMORA_DEBUG`` is set.
"""

from __future__ import annotations

import os
import sys

import typer
from typer.exceptions import Abort, TyperException

from lumora_ota.cli import (
    codesigning,
    deployments,
    embedded,
    keys,
    projects,
    updates,
)
from lumora_ota.cli.account import configure, whoami
from lumora_ota.cli.errors import CliError, one_line
from lumora_ota.cli.publish import publish
from lumora_ota.cli.serve import serve

app = typer.Typer(
    rich_markup_mode="markdown",
    name="lumora",
    help="Lumora OTA: publish and manage over-the-air updates, or run the server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve)
app.command("publish")(publish)
app.command("configure")(configure)
app.command("whoami")(whoami)
app.add_typer(projects.app)
app.add_typer(deployments.app)
app.add_typer(updates.app)
app.add_typer(keys.app)
app.add_typer(codesigning.app)
app.add_typer(embedded.app)  # delta updates: embedded bundles (#10)
# The seed's spelling of ``lumora configure``.
updates.app.command("configure")(configure)


@app.callback()
def _root() -> None:
    """Lumora OTA: publish and manage over-the-air updates, or run the server."""


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
