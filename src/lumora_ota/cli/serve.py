"""``lumora serve``: run the update server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from lumora_ota.settings import DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT, Settings

APP_FACTORY = "lumora_ota.server.app:create_app_from_env"


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
    """
    settings = Settings.from_env().with_overrides(
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        storage_url=storage_url,
        public_url=public_url,
        asset_base_url=asset_base_url,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _export(settings)
    if server == "uvicorn":
        import uvicorn

        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=10,
        )
        return
    if server != "granian":
        raise typer.BadParameter("choose granian or uvicorn", param_hint="--server")
    from granian.constants import Interfaces
    from granian.server import Server

    Server(
        APP_FACTORY,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=workers,
        factory=True,
        log_level=log_level,  # type: ignore[arg-type]
        log_access=False,
    ).serve()
