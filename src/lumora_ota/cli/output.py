"""How commands talk to the terminal: Rich tables for people, plain JSON for scripts.

Rich's console and tables are imported by the functions that draw them, not when a command
module loads: ``--json`` output needs neither.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import typer
from rich.filesize import decimal

from lumora_ota.cli.errors import CliError

if TYPE_CHECKING:
    from rich.console import Console

ID_COLUMNS = frozenset({"id", "update id", "update", "group"})


def stdout_console() -> Console:
    """A console on stdout (the command's result)."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def stderr_console() -> Console:
    """A console on stderr (progress, notes), so stdout stays clean for pipes."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout, exactly, without Rich markup. Answers
    read as models print as the server sent them (members as set, unknown ones kept)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=_as_json) + "\n")
    sys.stdout.flush()


def _as_json(value: Any) -> Any:
    """A model (``lumora_ota.api_models``) as its JSON members; pydantic is not imported."""
    dump = getattr(value, "model_dump", None)
    if dump is None:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")
    return dump(mode="json", by_alias=True, exclude_unset=True)


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None
) -> None:
    """A table with one row per item; ``None`` cells show as a dash.

    When the table fits the console (a terminal's width; 80 columns in a pipe unless
    ``COLUMNS`` says otherwise) it is one line per item. When it does not, each item becomes
    a block of "column  value" lines, so nothing is cut into unreadable slivers; ids are never
    wrapped or shortened in either form, so they can be copied whole.
    """
    from rich import box
    from rich.cells import cell_len
    from rich.table import Table

    cells = [["-" if cell is None else str(cell) for cell in row] for row in rows]
    console = stdout_console()
    widths = [
        max([cell_len(column), *(cell_len(row[i]) for row in cells)])
        for i, column in enumerate(columns)
    ]
    if sum(widths) + 2 * (len(columns) - 1) > console.width:
        _print_blocks(columns, cells, title=title)
        return
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        if column in ID_COLUMNS:
            table.add_column(column, no_wrap=True, min_width=36)
        else:
            table.add_column(column, overflow="fold")
    for row in cells:
        table.add_row(*row)
    console.print(table)


def _print_blocks(columns: Sequence[str], rows: list[list[str]], *, title: str | None) -> None:
    """One block per item: "column  value" lines, a blank line between items."""
    from rich.table import Table

    console = stdout_console()
    if title:
        console.print(title)
    for index, row in enumerate(rows):
        if index or title:
            console.print()
        block = Table(show_header=False, box=None, pad_edge=False)
        block.add_column(style="bold", no_wrap=True)
        block.add_column(overflow="fold")
        for column, value in zip(columns, row, strict=True):
            block.add_row(column, value)
        console.print(block)


def print_fields(pairs: Iterable[tuple[str, Any]], *, title: str | None = None) -> None:
    """A two-column "field: value" table for one object."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in pairs:
        table.add_row(name, "-" if value is None or value == "" else str(value))
    stdout_console().print(table)


def note(message: str) -> None:
    """A line for people on stderr (kept out of stdout so pipes get only results)."""
    stderr_console().print(message)


def human_bytes(size: int) -> str:
    """``1234567`` -> ``1.2 MB``."""
    return decimal(size)


def yes_no(value: Any) -> str:
    """A boolean for a table cell."""
    return "yes" if value else "no"


def stdin_is_interactive() -> bool:
    """Whether a person can answer questions (both stdin and stdout are terminals)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def confirm(question: str, *, assume_yes: bool, non_interactive: bool = False) -> None:
    """Ask before a destructive or production-changing step; ``--yes`` skips the question.

    Without a terminal to ask on (CI, scripts, stdin closed) or with ``--non-interactive``
    (as in EAS), the command is refused rather than run unasked: a ``CliError`` saying to
    pass ``--yes``, raised before anything is changed. Declining at the prompt aborts
    (``main`` reports it as ``error: aborted``).
    """
    if assume_yes:
        return
    if non_interactive or not stdin_is_interactive():
        why = "--non-interactive is set" if non_interactive else "no terminal to confirm on"
        raise CliError(f"{question.rstrip('?')}: refused without --yes ({why}); nothing changed")
    typer.confirm(question, abort=True)
