"""Flushing many devices at once: short chunked transactions, counters still exact after a
failure half-way through a flush."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select

from harness import create_pg_database, drop_pg_database
from lumora_ota import stats
from lumora_ota.stats import StatsRecorder
from lumora_ota.store.db import create_db_engine, migrate
from lumora_ota.store.models import DeviceDay, DeviceState, StatCounter

BACKENDS = [b for b in os.environ.get("LUMORA_TEST_BACKENDS", "sqlite,postgres").split(",") if b]
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module", params=BACKENDS)
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('flush') / 'db.sqlite'}"
    else:
        url = create_pg_database()
    eng = create_db_engine(url)
    migrate(eng)
    yield eng
    eng.dispose()
    if request.param == "postgres":
        drop_pg_database(url)


def count(engine: Engine, query: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def test_many_devices_flush_in_chunks_and_count_exactly(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats, "WRITE_CHUNK_ROWS", 7)
    rec = StatsRecorder(engine, clock=lambda: NOW)
    project = "chunked"
    for n in range(50):
        rec.record_check(
            project_id=project,
            channel="production",
            platform="ios",
            served_update_id="u1",
            device_id=f"device-{n}",
        )

    transactions: list[int] = []
    failed_once: list[bool] = []

    def on_begin(_conn: Any) -> None:
        transactions.append(1)

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # The first counters write fails after every device row went in.
        if "INSERT INTO stat_counters" in statement and not failed_once:
            failed_once.append(True)
            raise RuntimeError("the database went away")

    event.listen(engine, "begin", on_begin)
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        with pytest.raises(RuntimeError):
            rec.flush()
        assert rec.pending > 0 and rec.flush_errors == 1
        # 50 device days and 50 device states in chunks of 7: many short transactions.
        assert len(transactions) >= 2 * (50 // 7)
        assert rec.flush() > 0
    finally:
        event.remove(engine, "begin", on_begin)
        event.remove(engine, "before_cursor_execute", on_execute)

    checks = select(func.sum(StatCounter.value)).where(
        StatCounter.project_id == project, StatCounter.metric == "checks"
    )
    assert count(engine, checks) == 50  # written once, although the device rows went twice
    devices = select(func.count()).select_from(DeviceState).where(DeviceState.project_id == project)
    assert count(engine, devices) == 50
    days = select(func.count()).select_from(DeviceDay).where(DeviceDay.project_id == project)
    assert count(engine, days) == 50
