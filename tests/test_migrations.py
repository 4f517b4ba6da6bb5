"""The Alembic migrations create exactly the schema the models describe, on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from conftest import BACKENDS
from harness import create_pg_database, drop_pg_database
from lumora_ota.store.db import create_db_engine, migrate
from lumora_ota.store.models import Base


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    url = create_pg_database()
    yield url
    drop_pg_database(url)


def test_migrations_match_models(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_migrate_is_idempotent_and_seeds_delivery_state(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        migrate(engine)
        migrate(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM delivery_state")).scalar() == 1
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
        assert "updates" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        migrate(engine)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_0005_backfills_served_records_and_drops_facts_of_no_update(database_url: str) -> None:
    """Facts stored before served-to records existed keep counting (each device gets a record
    of its own source), and facts naming no update of their project (a flood of made-up
    failed ids) are deleted."""
    from alembic import command

    from lumora_ota.store.db import alembic_config

    engine = create_db_engine(database_url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(engine)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0002")
            conn.execute(
                text(
                    "INSERT INTO projects (id, slug, name, created_at, auto_pause_on_failure) "
                    "VALUES ('p', 'p', 'p', '2026-11-01 00:00:00', false)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO channels (id, project_id, name, created_at) "
                    "VALUES ('c', 'p', 'production', '2026-11-01 00:00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO update_groups (id, project_id, created_at, message) "
                    "VALUES ('g', 'p', '2026-11-01 00:00:00', '')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO updates (id, group_id, project_id, channel_id, platform, "
                    "runtime_version, kind, message, created_at, rollout, mandatory, status, "
                    "metadata_json, extra_json) VALUES ('u', 'g', 'p', 'c', 'ios', '1', "
                    "'update', '', '2026-11-01 00:00:00', 100, false, 'active', '{}', '{}')"
                )
            )
            for device, update_id, fact in (
                ("d1", "u", "install"),
                ("d1", "u", "launch_success"),
                ("d2", "u", "launch_failure"),
                ("d3", "made-up", "launch_failure"),
            ):
                conn.execute(
                    text(
                        "INSERT INTO device_update_facts (project_id, device_id, update_id, "
                        "fact, day, at) VALUES ('p', :d, :u, :f, '2026-11-02', "
                        "'2026-11-02 10:00:00')"
                    ),
                    {"d": device, "u": update_id, "f": fact},
                )
        migrate(engine)
        with engine.connect() as conn:
            served = conn.execute(
                text("SELECT device_id, update_id, source FROM device_served ORDER BY device_id")
            ).all()
            facts = conn.execute(text("SELECT count(*) FROM device_update_facts")).scalar_one()
        assert [tuple(r) for r in served] == [("d1", "u", "device:d1"), ("d2", "u", "device:d2")]
        assert facts == 3
    finally:
        engine.dispose()
