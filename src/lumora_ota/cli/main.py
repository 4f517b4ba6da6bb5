"""Entry point of the ``lumora`` command."""

from __future__ import annotations

import typer

from lumora_ota.cli.serve import serve

app = typer.Typer(
    name="lumora",
    help="Lumora OTA: publish and manage over-the-air updates, or run the server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve)


@app.callback()
def _root() -> None:
    """Lumora OTA: publish and manage over-the-air updates, or run the server."""


def main() -> None:
    """Run the CLI."""
    app()
