"""The server's data directory is private: 0700, and every file in it 0600, from creation.

The directory holds the SQLite database (API key hashes, the dashboard's session-signing
secret) and the blobs; another local user who can read it can forge an admin dashboard
session. ``make_private`` is called first thing by ``lumora serve`` and the launcher: it sets
the process umask to 077, so everything the server creates (directories, the database and
its journal, blobs, temporary uploads) is private from the first byte, never chmod-ed after
the fact; and it reports an existing directory or database that other users can read, which
the operator must fix (the server does not change modes it did not set).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
SQLITE_PREFIX = "sqlite:///"


def make_private(data_dir: Path, database_url: str | None = None) -> list[str]:
    """Set the umask to 077 and create ``data_dir`` (0700) when missing; one warning line
    for each existing path (the directory, an SQLite database file) that group or others
    may access."""
    os.umask(PRIVATE_UMASK)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = [data_dir]
    if database_url and database_url.startswith(SQLITE_PREFIX):
        paths.append(Path(database_url.removeprefix(SQLITE_PREFIX).split("?", 1)[0]))
    warnings: list[str] = []
    for path in paths:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
        if mode & 0o077:
            warnings.append(
                f"warning: {path} is accessible to other users (mode {mode:04o}); it holds "
                f"keys and the session secret: chmod {'700' if path.is_dir() else '600'} {path}"
            )
    return warnings
