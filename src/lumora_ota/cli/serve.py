"""``lumora serve``: run the update server."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from lumora_ota.cli.errors import CliError
from lumora_ota.datadir import make_private
from lumora_ota.server.launch import LOG_LEVELS, SERVERS, command
from lumora_ota.settings import (
    DEFAULT_DATA_DIR,
    DEFAULT_HOST,
    DEFAULT_PORT,
    Settings,
    SettingsError,
)


def _export(settings: Settings) -> None:
    """Hand settings to worker processes through the environment they inherit."""
    values = {
        "LUMORA_HOST": settings.host,
        "LUMORA_PORT": str(settings.port),
        "LUMORA_DATA_DIR": str(settings.data_dir),
        "LUMORA_DATABASE_URL": settings.database_url,
        "LUMORA_STORAGE_URL": settings.storage_url,
        "LUMORA_PUBLIC_URL": settings.public_url,
        "LUMORA_ASSET_BASE_URL": settings.asset_base_url,
    }
    for name, value in values.items():
        if value:
            os.environ[name] = value


def serve(
    host: Annotated[str, typer.Option(envvar="LUMORA_HOST", help="Address to bind.")] = (
        DEFAULT_HOST
    ),
    port: Annotated[int, typer.Option(envvar="LUMORA_PORT", help="Port to bind.")] = (DEFAULT_PORT),
    data_dir: Annotated[
        Path, typer.Option(envvar="LUMORA_DATA_DIR", help="Holds the SQLite file and blobs.")
    ] = Path(DEFAULT_DATA_DIR),
    database_url: Annotated[
        str | None,
        typer.Option(envvar="LUMORA_DATABASE_URL", help="SQLAlchemy URL; default SQLite."),
    ] = None,
    storage_url: Annotated[
        str | None,
        typer.Option(envvar="LUMORA_STORAGE_URL", help="file:///dir or s3://bucket?endpoint=..."),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(envvar="LUMORA_PUBLIC_URL", help="Base URL devices use to reach us."),
    ] = None,
    asset_base_url: Annotated[
        str | None,
        typer.Option(envvar="LUMORA_ASSET_BASE_URL", help="CDN base for asset URLs."),
    ] = None,
    workers: Annotated[int, typer.Option(envvar="LUMORA_WORKERS", min=1)] = 1,
    server: Annotated[
        str, typer.Option(envvar="LUMORA_SERVER_IMPL", help="granian or uvicorn.")
    ] = "granian",
    log_level: Annotated[str, typer.Option(envvar="LUMORA_LOG_LEVEL")] = "info",
) -> None:
    """Run the update server.

    Example: lumora serve --port 3002 --data-dir ./.lumora

    The process then replaces itself with ``python -m lumora_ota.server.launch`` (see there):
    a small supervisor that does not carry the CLI's modules into the server.
    """
    try:
        from_env = Settings.from_env()
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    settings = from_env.with_overrides(
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        storage_url=storage_url,
        public_url=public_url,
        asset_base_url=asset_base_url,
    )
    if server not in SERVERS:
        raise typer.BadParameter("choose granian or uvicorn", param_hint="--server")
    log_level = log_level.lower()
    if log_level not in LOG_LEVELS:
        raise typer.BadParameter(f"choose one of {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    # Private before the migration creates the database; the launcher reports loose modes.
    make_private(settings.data_dir, settings.resolved_database_url)
    _export(settings)
    _migrate(settings)
    _exec_server(
        command(
            server=server,
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_level=log_level,
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
