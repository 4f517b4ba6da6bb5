"""The server process ``lumora serve`` turns into: a lean supervisor for the ASGI server.

``lumora serve`` (the Typer CLI) validates its options, exports the settings to the
environment, migrates the database, then replaces itself (``os.execv``, same PID, so signals
and process-tree handling are unchanged) with ``python -m lumora_ota.server.launch``. This
module imports only the standard library and the chosen server, so the supervisor stays small
and the workers, forked from it, do not inherit the CLI's modules (Typer, Rich, Click, the
API client) either: every megabyte here is counted once in the supervisor and again in each
worker's RSS. It must not import the application (FastAPI, SQLAlchemy, ...): the workers do.

Run directly, it reads the same ``LUMORA_*`` variables as the application::

    LUMORA_DATA_DIR=/srv/lumora python -m lumora_ota.server.launch --workers 2
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
from collections.abc import Sequence

APP_FACTORY = "lumora_ota.server.app:create_app_from_env"
SERVERS = ("granian", "uvicorn")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
GRACEFUL_SHUTDOWN_SECONDS = 10


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
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="python -m lumora_ota.server.launch",
        description="Run the Lumora OTA server (settings from LUMORA_* variables).",
    )
    parser.add_argument("--server", choices=SERVERS, default=env("LUMORA_SERVER_IMPL", "granian"))
    parser.add_argument("--host", default=env("LUMORA_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("LUMORA_PORT", "3002")))
    parser.add_argument("--workers", type=int, default=int(env("LUMORA_WORKERS", "1")))
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=env("LUMORA_LOG_LEVEL", "info"))
    return parser


def run_granian(*, host: str, port: int, workers: int, log_level: str) -> None:
    """Serve with granian: this process supervises, ``workers`` forked processes serve."""
    from granian.constants import Interfaces
    from granian.server import Server

    Server(
        APP_FACTORY,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        factory=True,
        log_level=log_level,  # type: ignore[arg-type]
        log_access=False,
        # Like uvicorn's graceful-shutdown timeout below: a worker that has not finished its
        # shutdown this long after SIGTERM is killed instead of holding the server up forever.
        workers_kill_timeout=GRACEFUL_SHUTDOWN_SECONDS,
    ).serve()


def run_uvicorn(*, host: str, port: int, workers: int, log_level: str) -> None:
    """Serve with uvicorn (in this process when ``workers`` is 1)."""
    import uvicorn

    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
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
    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    ensure_port_free(args.host, args.port)
    run = run_granian if args.server == "granian" else run_uvicorn
    run(host=args.host, port=args.port, workers=args.workers, log_level=args.log_level)


if __name__ == "__main__":
    main()
