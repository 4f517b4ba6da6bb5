"""``lumora keys``: create, list and revoke management API keys.

Through the API with an admin key, or straight on the database with ``--data-dir`` or
``--database-url`` (how the very first key is made when the server has no bootstrap key).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from lumora_ota.cli.options import (
    ApiKeyOption,
    JsonOption,
    NonInteractiveOption,
    ServerOption,
    YesOption,
    open_api,
)
from lumora_ota.cli.output import confirm, note, print_json, print_table, stdout_console

app = typer.Typer(
    rich_markup_mode="markdown",
    name="keys",
    help="Create, list and revoke management API keys.",
    no_args_is_help=True,
)

DIRECT_PANEL = "Direct database access (no server needed)"


class Role(StrEnum):
    """What a key may do: admin > publish > read."""

    read = "read"
    publish = "publish"
    admin = "admin"


DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Work on the SQLite database in this data dir instead of the API.",
        rich_help_panel=DIRECT_PANEL,
    ),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Work on this database (SQLAlchemy URL) instead of the API.",
        rich_help_panel=DIRECT_PANEL,
    ),
]


def _direct_url(data_dir: Path | None, database_url: str | None) -> str | None:
    if data_dir is None and database_url is None:
        return None
    # Imported on demand (here and below): SQLAlchemy and Alembic would add about a second
    # to the start-up of every other command.
    from lumora_ota.cli import keys_direct

    return keys_direct.database_url_from(data_dir, database_url)


@app.command("create")
def create_key(
    name: Annotated[str, typer.Option("--name", help="What the key is for.")] = "",
    role: Annotated[Role, typer.Option("--role", help="read, publish or admin.")] = Role.publish,
    project: Annotated[
        str | None,
        typer.Option("--project", help="Limit the key to this project [default: all projects]."),
    ] = None,
    expires_in: Annotated[
        int | None, typer.Option("--expires-in", min=1, help="Expire after this many days.")
    ] = None,
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Create an API key and print it (it is shown only this once).

    Example: lumora keys create --name ci --role publish --project my-app

    Example (first key, straight on the server's data dir): lumora keys create --data-dir
    .lumora --role admin --name me --json
    """
    from lumora_ota.api_models import NewKeyAnswer

    expires_at = datetime.now(UTC) + timedelta(days=expires_in) if expires_in else None
    direct = _direct_url(data_dir, database_url)
    if direct is not None:
        from lumora_ota.cli import keys_direct

        created = NewKeyAnswer.model_validate(
            keys_direct.create_key(
                direct, name=name, role=role.value, project=project, expires_at=expires_at
            )
        )
    else:
        body: dict[str, Any] = {"name": name, "role": role.value}
        if project is not None:
            body["project"] = project
        if expires_at is not None:
            from lumora_ota.domain.manifest import iso_time

            body["expiresAt"] = iso_time(expires_at)
        with open_api(server, api_key) as api:
            created = api.read(NewKeyAnswer, "POST", "/keys", json=body)
    if as_json:
        print_json(created)
        return
    stdout_console().print(created.key, markup=False, soft_wrap=True)
    note(f"created {created.role} key {created.id}; store it now, it is not shown again")


@app.command("list")
def list_keys(
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List API keys (never their secrets).

    Example: lumora keys list --json
    """
    from lumora_ota.api_models import Items, KeyAnswer

    direct = _direct_url(data_dir, database_url)
    if direct is not None:
        from lumora_ota.cli import keys_direct

        items = Items[KeyAnswer].model_validate({"items": keys_direct.list_keys(direct)}).items
    else:
        with open_api(server, api_key) as api:
            items = api.read(Items[KeyAnswer], "GET", "/keys").items
    if as_json:
        print_json(items)
        return
    print_table(
        ["id", "name", "prefix", "role", "project", "created", "expires", "state"],
        (
            [
                k.id,
                k.name,
                k.prefix,
                k.role,
                k.project_id or "all",
                _date(k.created_at),
                _date(k.expires_at),
                "revoked" if k.revoked_at else "active",
            ]
            for k in items
        ),
    )


@app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="Key id (see `lumora keys list`).")],
    yes: YesOption = False,
    non_interactive: NonInteractiveOption = False,
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Revoke an API key; requests with it fail from then on.

    Example: lumora keys revoke 6f2c1d0e-... --yes
    """
    from lumora_ota.api_models import KeyAnswer

    confirm(f"Revoke key {key_id}?", assume_yes=yes, non_interactive=non_interactive)
    direct = _direct_url(data_dir, database_url)
    if direct is not None:
        from lumora_ota.cli import keys_direct

        revoked = KeyAnswer.model_validate(keys_direct.revoke_key(direct, key_id))
    else:
        with open_api(server, api_key) as api:
            revoked = api.read(KeyAnswer, "DELETE", f"/keys/{key_id}")
    if as_json:
        print_json(revoked)
        return
    note(f"revoked key {key_id}")


def _date(value: Any) -> str | None:
    return str(value)[:10] if value else None
