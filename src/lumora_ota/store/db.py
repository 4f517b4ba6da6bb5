"""Database engines, sessions and schema migration.

SQLite runs in WAL mode with a busy timeout, and every write transaction starts with
``BEGIN IMMEDIATE`` so concurrent writers queue instead of failing on a lock upgrade.
PostgreSQL uses psycopg 3. Migrations run at start under a lock (an advisory lock on
PostgreSQL, a file lock beside the SQLite file), so several processes may start at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from lumora_ota.store.models import (
    Channel,
    DeliveryState,
    DevicePin,
    Project,
    PublisherSignature,
    SigningKey,
    Update,
    UpdateAsset,
    UpdateGroup,
)

if TYPE_CHECKING:
    # Alembic (and Mako, which it pulls in) is imported only when a migration actually runs:
    # server workers started by ``lumora serve`` skip it (see ``migrate``), saving their memory.
    from alembic.config import Config

    from lumora_ota.store.blobs import BlobStore

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Set by ``lumora serve`` after it migrated, for the server processes it starts: see ``migrate``.
MIGRATED_ENV = "LUMORA_SCHEMA_MIGRATED"
_PG_MIGRATION_LOCK = 0x4C554D4F  # "LUMO"
# How long a SQLite write waits for another writer's lock before failing (ms).
SQLITE_BUSY_TIMEOUT_MS = 30000
# Set in the connection's ``info`` by the bump functions below, so this process can act when
# that transaction commits (``DeliveryCache.watch_local_commits``) without polling.
DELIVERY_BUMPED = "lumora_delivery_bumped"
# The tables whose rows decide what devices get (selection, manifests, signatures): a write
# to one moves the delivery revision in its transaction (``_bump_on_delivery_change``).
DELIVERY_MODELS = (
    Project,
    Channel,
    UpdateGroup,
    Update,
    UpdateAsset,
    SigningKey,
    PublisherSignature,  # the publisher-held mode serves only what they sign
    DevicePin,  # a pinned device is served another channel
)
DELIVERY_TABLES = frozenset(model.__tablename__ for model in DELIVERY_MODELS)
PATCH_BUMPED = "lumora_patch_bumped"


def normalize_database_url(url: str) -> str:
    """Map ``postgres://`` and ``postgresql://`` URLs to the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def is_sqlite(engine: Engine) -> bool:
    """Whether the engine talks to SQLite."""
    return engine.dialect.name == "sqlite"


def create_db_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine for ``url`` with the pragmas and pooling this project relies on."""
    url = normalize_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=20,
        )
        _configure_sqlite(engine)
        return engine
    # A database host that stops answering (rather than refusing) must not hold a request
    # for the kernel's TCP timeout: give up connecting after a few seconds (unless the URL
    # says otherwise), and the device path answers from its snapshot meanwhile.
    connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": 5}
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=20,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=connect_args,
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from the sqlite3 module (SQLAlchemy's documented
        # recipe), so the "begin" hook below decides how each transaction starts.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get("readonly"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    """An Alembic config pointing at the packaged migrations and this engine's URL."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option(
        "sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%")
    )
    return cfg


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[Any]:
    if is_sqlite(engine):
        db_path = engine.url.database
        lock_path = Path(f"{db_path}.migrate.lock") if db_path else None
        if lock_path is None or db_path == ":memory:":
            with engine.connect() as conn:
                yield conn
            return
        with open(lock_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                with engine.connect() as conn:
                    yield conn
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            conn.commit()
            try:
                yield conn
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                conn.commit()


def migration_stamp(engine: Engine) -> str:
    """Names this database and the packaged migrations (their file names), without secrets."""
    versions = sorted(p.name for p in (MIGRATIONS_DIR / "versions").glob("*.py"))
    url = engine.url.render_as_string(hide_password=False)
    return hashlib.sha256("\n".join([url, *versions]).encode()).hexdigest()


def migrate(engine: Engine, blobs: BlobStore | None = None) -> None:
    """Bring the schema to the newest revision, holding the migration lock meanwhile.

    ``blobs`` lets migrations that fix stored data read the stored files (0003 computes each
    blob's md5); without it they leave that data for ``store.digests.fill_missing_md5``.

    Skipped when ``LUMORA_SCHEMA_MIGRATED`` equals ``migration_stamp(engine)``: ``lumora serve``
    migrates once before it starts the server and hands the stamp to the processes it starts,
    so its workers neither import Alembic nor take the lock. Any other caller (another ASGI
    server running ``create_app_from_env``, another database, a package upgraded with new
    migrations, which changes the stamp) migrates as before.
    """
    if os.environ.get(MIGRATED_ENV) == migration_stamp(engine):
        return
    from alembic import command

    with _migration_lock(engine) as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        cfg.attributes["blobs"] = blobs
        command.upgrade(cfg, "head")
        conn.commit()


def bump_delivery_revision(session: Session) -> None:
    """Mark every server's delivery cache stale, in the session's transaction. Sessions
    call it themselves (``_bump_on_delivery_change``): only a write that bypasses the ORM
    session (Core, on a bare connection) must mark the connection itself
    (``DELIVERY_BUMPED``, as ``store/digests.py`` does)."""
    conn = session.connection()
    conn.execute(
        update(DeliveryState)
        .where(DeliveryState.id == 1)
        .values(revision=DeliveryState.revision + 1)
    )
    conn.info[DELIVERY_BUMPED] = True


def _is_delivery(entity: object) -> bool:
    return isinstance(entity, DELIVERY_MODELS)


@event.listens_for(Session, "before_flush")
def _bump_on_delivery_change(session: Session, _context: Any, _instances: Any) -> None:
    """The unit of work moves the delivery revision: any new, changed or deleted row of a
    delivery table (``DELIVERY_MODELS``) bumps it in the same transaction, so no write that
    changes what devices get can forget to (issue 18 item 5)."""
    if any(_is_delivery(o) for o in session.new) or any(_is_delivery(o) for o in session.deleted):
        bump_delivery_revision(session)
        return
    for entity in session.dirty:
        if _is_delivery(entity) and session.is_modified(entity, include_collections=False):
            bump_delivery_revision(session)
            return


@event.listens_for(Session, "do_orm_execute")
def _bump_on_delivery_statement(state: Any) -> None:
    """The same for statements run through a session (bulk UPDATE/DELETE/INSERT)."""
    if not (state.is_update or state.is_delete or state.is_insert):
        return
    table = getattr(state.statement, "table", None)
    if table is not None and table.name in DELIVERY_TABLES:
        bump_delivery_revision(state.session)


def bump_patch_revision(session: Session) -> None:
    """Mark every server's patch index stale (delta patches were recorded); call inside the
    transaction that recorded them. Leaves the delivery revision, hence the delivery caches,
    alone: patches change neither selection nor manifests."""
    session.execute(
        update(DeliveryState)
        .where(DeliveryState.id == 1)
        .values(patch_revision=DeliveryState.patch_revision + 1)
    )
    session.connection().info[PATCH_BUMPED] = True


def read_revisions(engine: Engine) -> tuple[int, int]:
    """The current (delivery revision, patch revision), in one cheap read (the cache poller's)."""
    with engine.connect().execution_options(readonly=True) as conn:
        row = conn.execute(
            text("SELECT revision, patch_revision FROM delivery_state WHERE id = 1")
        ).first()
        conn.rollback()
    if row is None:
        return 0, 0
    return int(row[0] or 0), int(row[1] or 0)


def sqlite_write_problem(engine: Engine, wait_ms: int = 200) -> str | None:
    """Why this SQLite database cannot take a write right now ("locked by another process",
    "read-only", ...), or None when it can. Waits at most ``wait_ms`` for a lock; writes
    nothing (``BEGIN IMMEDIATE`` then ``ROLLBACK``)."""
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout={int(wait_ms)}")
            cur.execute("BEGIN IMMEDIATE")
            cur.execute("ROLLBACK")
        except Exception as exc:
            text = str(exc).lower()
            if "locked" in text or "busy" in text:
                return "locked by another process"
            if "readonly" in text or "read-only" in text:
                return "read-only"
            return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        finally:
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.close()
    finally:
        raw.close()
    return None
