"""Flushing many devices at once: short chunked transactions, counters still exact after a
failure half-way through a flush."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select

from lumora_ota import stats
from lumora_ota.stats import StatsRecorder
from lumora_ota.store.models import DeviceDay, DeviceState, StatCounter

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine(store_engine: Engine) -> Engine:
    return store_engine


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
