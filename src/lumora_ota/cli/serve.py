"""``lumora serve``: run the update server."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from lumora_ota.cli.errors import CliError
from lumora_ota.datadir import make_private
from lumora_ota.server.launch import LaunchSettings, command

if TYPE_CHECKING:
    from lumora_ota.settings import Settings

# The variable each flag overrides.
FLAGS = {
    "LUMORA_HOST": "--host",
    "LUMORA_PORT": "--port",
    "LUMORA_DATA_DIR": "--data-dir",
    "LUMORA_DATABASE_URL": "--database-url",
    "LUMORA_STORAGE_URL": "--storage-url",
    "LUMORA_PUBLIC_URL": "--public-url",
    "LUMORA_ASSET_BASE_URL": "--asset-base-url",
    "LUMORA_WORKERS": "--workers",
    "LUMORA_SERVER_IMPL": "--server",
    "LUMORA_LOG_LEVEL": "--log-level",
}


def _export(settings: Settings) -> None:
    """Hand the validated settings to the server processes through the environment they
    inherit: the launcher's values (marked validated) and the flags' overrides."""
    values = {
        "LUMORA_STORAGE_URL": settings.storage_url,
        "LUMORA_PUBLIC_URL": settings.public_url,
        "LUMORA_ASSET_BASE_URL": settings.asset_base_url,
    }
    for name, value in values.items():
        if value:
            os.environ[name] = value
    LaunchSettings(
        server=settings.server,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        header_timeout=settings.header_timeout,
        max_connections=settings.max_connections,
        shutdown_timeout=settings.shutdown_timeout,
        data_dir=settings.data_dir,
        database_url=settings.resolved_database_url,
    ).export()


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind [env LUMORA_HOST; default 127.0.0.1].")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to bind [env LUMORA_PORT; default 3002].")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Holds the SQLite file and blobs [env LUMORA_DATA_DIR; .lumora]."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy URL [env LUMORA_DATABASE_URL]; default SQLite."),
    ] = None,
    storage_url: Annotated[
        str | None,
        typer.Option(help="file:///dir or s3://bucket?endpoint=... [env LUMORA_STORAGE_URL]."),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(help="Base URL devices use to reach us [env LUMORA_PUBLIC_URL]."),
    ] = None,
    asset_base_url: Annotated[
        str | None,
        typer.Option(help="CDN base for asset URLs [env LUMORA_ASSET_BASE_URL]."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes [env LUMORA_WORKERS; default 1].")
    ] = None,
    server: Annotated[
        str | None, typer.Option(help="granian or uvicorn [env LUMORA_SERVER_IMPL].")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="[env LUMORA_LOG_LEVEL; info].")] = None,
) -> None:
    """Run the update server.

    Example: lumora serve --port 3002 --data-dir ./.lumora

    Every setting (flags and ``LUMORA_*`` variables) is validated first: a bad one is
    reported in one line, naming the variable, and nothing starts. The process then replaces
    itself with ``python -m lumora_ota.server.launch`` (see there): a small supervisor that
    does not carry the CLI's modules into the server.
    """
    # Imported here: listing the commands (``lumora --help``) must not load pydantic.
    from lumora_ota.settings import Settings, SettingsError

    flags = {
        "--host": host,
        "--port": port,
        "--data-dir": data_dir,
        "--database-url": database_url,
        "--storage-url": storage_url,
        "--public-url": public_url,
        "--asset-base-url": asset_base_url,
        "--workers": workers,
        "--server": server,
        "--log-level": log_level,
    }
    try:
        settings = Settings.from_env().with_overrides(
            host=host,
            port=port,
            data_dir=data_dir,
            database_url=database_url,
            storage_url=storage_url,
            public_url=public_url,
            asset_base_url=asset_base_url,
            workers=workers,
            server_impl=server,
            log_level=log_level,
        )
    except SettingsError as exc:
        flag = FLAGS.get(exc.variable)
        if flag is not None and flags[flag] is not None:  # the flag's value, not the variable's
            message = str(exc).removeprefix(exc.variable).strip()
            raise typer.BadParameter(message, param_hint=flag) from None
        raise CliError(str(exc)) from None
    # Private before the migration creates the database; the launcher reports loose modes.
    make_private(settings.data_dir, settings.resolved_database_url)
    _export(settings)
    _migrate(settings)
    _exec_server(
        command(
            server=settings.server,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
        )
    )


def _migrate(settings: Settings) -> None:
    """Migrate once, here, and tell the server processes so (``store.db.migrate``): workers
    then skip Alembic, and a migration error shows before anything listens."""
    from lumora_ota.store.db import MIGRATED_ENV, create_db_engine, migrate, migration_stamp

    os.environ.pop(MIGRATED_ENV, None)
    from lumora_ota.store.blobs import open_blob_store

    engine = create_db_engine(settings.resolved_database_url)
    try:
        migrate(engine, open_blob_store(settings.resolved_storage_url))
        os.environ[MIGRATED_ENV] = migration_stamp(engine)
    finally:
        engine.dispose()


def _exec_server(argv: list[str]) -> NoReturn:
    """Become the lean server supervisor (same PID: signals and process trees are unchanged)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # noqa: S606 - our own interpreter, fixed argv
