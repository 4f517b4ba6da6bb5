"""The server process ``lumora serve`` turns into: a lean supervisor for the ASGI server.

``lumora serve`` (the Typer CLI) validates every setting (``lumora_ota.settings``), exports
them to the environment, migrates the database, then replaces itself (``os.execv``, same
PID, so signals and process-tree handling are unchanged) with ``python -m
lumora_ota.server.launch``. This module imports only the standard library,
``lumora_ota.defaults`` and the chosen server: it reads the values ``lumora serve`` validated
(``LaunchSettings``), so the supervisor stays small and the workers, forked from it, do not
inherit the CLI's modules (Typer, Rich, Click, the API client) or pydantic-settings (about
20 MiB and 0.3 s here) either: every megabyte here is counted once in the supervisor and
again in each worker's RSS. It must not import the application (FastAPI, SQLAlchemy, ...):
the workers do. Run directly, it validates the settings itself first (then paying for
pydantic).

Run directly, it reads the same ``LUMORA_*`` variables as the application::

    LUMORA_DATA_DIR=/srv/lumora python -m lumora_ota.server.launch --workers 2
"""

from __future__ import annotations

import argparse
import errno
import logging
import math
import os
import resource
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lumora_ota.datadir import make_private
from lumora_ota.defaults import LOG_LEVELS, SERVERS, VALIDATED_ENV
from lumora_ota.server.allocator import limit_arenas

__all__ = ["LOG_LEVELS", "SERVERS", "LaunchSettings", "command", "main"]

APP_FACTORY = "lumora_ota.server.app:create_app_from_env"
# File descriptors a worker keeps for itself beyond its connections (database, blobs, logs).
RESERVED_FDS = 256

log = logging.getLogger("lumora_ota.server")


@dataclass(frozen=True)
class LaunchSettings:
    """What the supervisor needs of the settings (``lumora_ota.settings.Settings``)."""

    server: str
    host: str
    port: int
    workers: int
    log_level: str
    header_timeout: float
    max_connections: int
    shutdown_timeout: float
    data_dir: Path
    database_url: str

    ENV = {
        "server": "LUMORA_SERVER_IMPL",
        "host": "LUMORA_HOST",
        "port": "LUMORA_PORT",
        "workers": "LUMORA_WORKERS",
        "log_level": "LUMORA_LOG_LEVEL",
        "header_timeout": "LUMORA_HEADER_TIMEOUT",
        "max_connections": "LUMORA_MAX_CONNECTIONS",
        "shutdown_timeout": "LUMORA_SHUTDOWN_TIMEOUT",
        "data_dir": "LUMORA_DATA_DIR",
        "database_url": "LUMORA_DATABASE_URL",
    }

    def export(self) -> None:
        """Put every value into the environment, marked validated (``lumora serve``)."""
        for name, variable in self.ENV.items():
            os.environ[variable] = str(getattr(self, name))
        os.environ[VALIDATED_ENV] = "1"

    @classmethod
    def load(cls) -> LaunchSettings:
        """The values ``lumora serve`` validated and exported; else (run directly) the
        settings validated here, a bad one exiting with its one-line message."""
        if os.environ.get(VALIDATED_ENV):
            env = os.environ
            return cls(
                server=env["LUMORA_SERVER_IMPL"],
                host=env["LUMORA_HOST"],
                port=int(env["LUMORA_PORT"]),
                workers=int(env["LUMORA_WORKERS"]),
                log_level=env["LUMORA_LOG_LEVEL"],
                header_timeout=float(env["LUMORA_HEADER_TIMEOUT"]),
                max_connections=int(env["LUMORA_MAX_CONNECTIONS"]),
                shutdown_timeout=float(env["LUMORA_SHUTDOWN_TIMEOUT"]),
                data_dir=Path(env["LUMORA_DATA_DIR"]),
                database_url=env["LUMORA_DATABASE_URL"],
            )
        from lumora_ota.settings import Settings, SettingsError

        try:
            settings = Settings.from_env()
        except SettingsError as exc:
            raise SystemExit(f"error: {exc}") from None
        return cls(
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
        )


def connection_cap(wanted: int) -> int:
    """Connections one worker may hold: ``wanted``, raising this process's soft open-file
    limit towards its hard limit to make room (workers inherit it), and lowered when even
    the hard limit leaves too few descriptors: a worker out of descriptors refuses every
    new client, which is the lockout the cap exists to prevent."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        capped = max(16, soft - RESERVED_FDS)
        log.warning(
            "LUMORA_MAX_CONNECTIONS=%d needs %d open files, the limit is %d: serving at most "
            "%d connections per worker",
            wanted,
            needed,
            soft,
            capped,
        )
        return capped
    return wanted


def command(
    *,
    server: str,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    python: str | None = None,
) -> list[str]:
    """The argv that runs this module with the given options (``argv[0]`` is ``python``)."""
    return [
        python or sys.executable,
        "-m",
        __name__ if __name__ != "__main__" else "lumora_ota.server.launch",
        "--server",
        server,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        log_level,
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lumora_ota.server.launch",
        description="Run the Lumora OTA server (settings from LUMORA_* variables; the flags "
        "override them).",
    )
    parser.add_argument("--server", choices=SERVERS)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--log-level", choices=LOG_LEVELS)
    return parser


def run_granian(
    *, host: str, port: int, workers: int, log_level: str, settings: LaunchSettings
) -> None:
    """Serve with granian: this process supervises, ``workers`` forked processes serve the
    application through its RSGI entry (``server/rsgi.py``).

    HTTP/1.1 only (a reverse proxy speaks HTTP/2 to devices): in granian's automatic mode a
    connection that sends nothing waits for protocol detection with no timeout at all, so
    1,024 silent connections locked every client out. In HTTP/1 mode hyper's header timeout
    runs from the moment a connection opens or goes idle, and each worker holds up to
    ``max_connections`` (granian's backpressure) while the rest wait in the accept queue.
    """
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings

    from lumora_ota.server.workerstop import granian_server

    cap = connection_cap(settings.max_connections)
    # Its workers stopped within ``shutdown_timeout``, killed only when really stuck.
    granian_server(settings.shutdown_timeout)(
        APP_FACTORY,
        address=host,
        port=port,
        # RSGI: the application's native entry (``server/rsgi.py``), cheaper per request
        # than granian's ASGI bridge; the application's lifespan runs in each worker.
        interface=Interfaces.RSGI,
        workers=workers,
        factory=True,
        log_level=log_level,
        log_access=False,
        http=HTTPModes.http1,
        websockets=False,  # no WebSocket routes (the RSGI entry serves HTTP only)
        http1_settings=HTTP1Settings(
            header_read_timeout=max(1, round(settings.header_timeout * 1000)), keep_alive=True
        ),
        backlog=max(1024, min(cap, 4096)),
        backpressure=cap,
        # Like uvicorn's graceful-shutdown timeout below: a worker that has not finished its
        # shutdown this long after SIGTERM is killed instead of holding the server up forever
        # (at stop ``stop_workers`` applies it; granian itself when it respawns a worker).
        workers_kill_timeout=math.ceil(settings.shutdown_timeout),
    ).serve()


def run_uvicorn(
    *, host: str, port: int, workers: int, log_level: str, settings: LaunchSettings
) -> None:
    """Serve with uvicorn (in this process when ``workers`` is 1). Idle keep-alive
    connections close after ``header_timeout``; past ``max_connections`` new requests get
    503 (uvicorn has no header timeout for a fresh connection: prefer granian, the default,
    where the server faces the network)."""
    import uvicorn

    cap = connection_cap(settings.max_connections)

    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout),
        timeout_keep_alive=max(1, round(settings.header_timeout)),
        limit_concurrency=cap,
    )


def ensure_port_free(host: str, port: int) -> None:
    """Exit (status 1) with ``address already in use`` when something listens on ``host:port``.

    granian binds with ``SO_REUSEPORT``, so a second server on a busy port would start
    silently and the kernel would spread requests over both, each with its own data. A plain
    bind (``SO_REUSEADDR`` only, so a previous server's connections in TIME_WAIT do not
    count) fails when anything listens there, as uvicorn's does. Two servers starting in the
    same instant can still both pass; nothing short of granian dropping ``SO_REUSEPORT``
    closes that window.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SystemExit(f"error: cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise SystemExit(f"error: cannot listen on {host}:{port}: {reason}") from None


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m lumora_ota.server.launch``."""
    args = _parser().parse_args(argv)
    settings = LaunchSettings.load()
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    workers = args.workers if args.workers is not None else settings.workers
    if workers < 1:
        raise SystemExit("--workers must be at least 1")
    ensure_port_free(host, port)
    # Before the server forks or spawns its workers, so they inherit the cap.
    limit_arenas()
    for warning in make_private(settings.data_dir, settings.database_url):
        print(warning, file=sys.stderr, flush=True)
    run = run_granian if (args.server or settings.server) == "granian" else run_uvicorn
    run(
        host=host,
        port=port,
        workers=workers,
        log_level=args.log_level or settings.log_level,
        settings=settings,
    )


if __name__ == "__main__":
    main()
