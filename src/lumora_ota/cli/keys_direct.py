"""API key management straight on a Lumora database, for when no key exists yet (or no
server runs): ``lumora keys ... --data-dir DIR`` / ``--database-url URL``.

SQLite allows this while a server runs on the same file (WAL mode, write transactions
queue), and so does PostgreSQL; the server sees new keys on its next lookup.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from lumora_ota.cli.errors import CliError
from lumora_ota.datadir import make_private
from lumora_ota.domain.manifest import iso_time
from lumora_ota.settings import Settings
from lumora_ota.store import apikeys
from lumora_ota.store.db import create_db_engine, make_session_factory, migrate
from lumora_ota.store.models import ApiKey
from lumora_ota.store.repository import find_project


def database_url_from(data_dir: Path | None, database_url: str | None) -> str:
    """The database named by ``--database-url``, else the SQLite file in ``--data-dir``."""
    if database_url:
        return database_url
    if data_dir is None:
        raise CliError("pass --data-dir or --database-url", exit_code=2)
    return Settings(data_dir=data_dir).resolved_database_url


@contextlib.contextmanager
def open_session(url: str, *, create: bool) -> Iterator[Session]:
    """A session on ``url`` with the schema migrated; commits when the block succeeds.

    Unless ``create`` is set, a missing SQLite file is an error rather than a new, empty
    database in the wrong place.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError and ValueError alike
        raise CliError(f"not a database URL: {url}") from exc
    is_sqlite_file = parsed.get_backend_name() == "sqlite" and bool(parsed.database)
    if is_sqlite_file and not create and not Path(str(parsed.database)).exists():
        raise CliError(
            f"no Lumora database at {parsed.database}; check --data-dir or --database-url"
        )
    if is_sqlite_file:
        # Private from creation, as `lumora serve` makes them (lumora_ota.datadir).
        make_private(Path(str(parsed.database)).parent)
    try:
        engine = create_db_engine(url, pool_size=1)
    except Exception as exc:
        raise CliError(f"cannot open database {parsed.render_as_string()}: {exc}") from exc
    try:
        migrate(engine)
        with make_session_factory(engine)() as session:
            yield session
            session.commit()
    except SQLAlchemyError as exc:
        raise CliError(f"database error: {str(exc).splitlines()[0]}") from exc
    finally:
        engine.dispose()


def key_json(key: ApiKey, secret: str | None = None) -> dict[str, Any]:
    """A key in the management API's JSON shape (the secret only at creation)."""
    body: dict[str, Any] = {"id": key.id}
    if secret is not None:
        body["key"] = secret
    body.update(
        name=key.name,
        role=key.role,
        projectId=key.project_id,
        prefix=key.prefix,
        createdAt=_time(key.created_at),
        expiresAt=_time(key.expires_at),
        revokedAt=_time(key.revoked_at),
        lastUsedAt=_time(key.last_used_at),
    )
    return body


def create_key(
    url: str, *, name: str, role: str, project: str | None, expires_at: datetime | None
) -> dict[str, Any]:
    """Create a key directly in the database; returns its JSON with the secret."""
    with open_session(url, create=True) as session:
        project_id = None
        if project is not None:
            found = find_project(session, project)
            if found is None:
                raise CliError(f"not found: no project {project!r} in that database")
            project_id = found.id
        key, secret = apikeys.create_key(
            session, name=name, role=role, project_id=project_id, expires_at=expires_at
        )
        return key_json(key, secret)


def list_keys(url: str) -> list[dict[str, Any]]:
    """Every key in the database (no secrets)."""
    with open_session(url, create=False) as session:
        return [key_json(k) for k in apikeys.list_keys(session)]


def revoke_key(url: str, key_id: str) -> dict[str, Any]:
    """Revoke a key by id directly in the database."""
    with open_session(url, create=False) as session:
        key = apikeys.revoke_key(session, key_id)
        if key is None:
            raise CliError(f"not found: no key {key_id!r}")
        return key_json(key)


def _time(value: datetime | None) -> str | None:
    return iso_time(value) if value is not None else None
