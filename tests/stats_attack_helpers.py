"""Helpers for the statistics attack tests: devices from distinct client addresses, waiting on
flushes by state, and row counts read straight from the server's database."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import Engine, column, func, inspect, select, table

from device_helpers import expo_headers
from harness import ServerProcess
from lumora_ota.store.db import create_db_engine
from lumora_ota.store.models import DeviceState, Update

EMBEDDED = "11111111-1111-4111-8111-111111111111"
STATS_TABLES = (
    "device_update_facts",
    "device_served",
    "device_state",
    "device_days",
    "stat_counters",
)


@contextmanager
def from_address(server: ServerProcess, n: int) -> Iterator[httpx.Client]:
    """A client whose requests come from 127.0.0.``n`` (all of 127/8 is loopback on Linux):
    another source, as far as per-source caps go."""
    transport = httpx.HTTPTransport(local_address=f"127.0.0.{n}")
    with httpx.Client(base_url=server.url, timeout=30, transport=transport) as client:
        yield client


def manifest(client: httpx.Client, slug: str, **headers: str) -> httpx.Response:
    """An Expo manifest GET (protocol 1, ios, runtime 1) with extra headers."""
    resp = client.get(f"/api/v1/expo/{slug}/manifest", headers=expo_headers(**headers))
    assert resp.status_code == 200, resp.text
    return resp


def served(client: httpx.Client, slug: str, device: str, update_id: str) -> None:
    """``device`` asks and is offered ``update_id`` (its served-to record)."""
    resp = manifest(client, slug, eas_client_id=device, expo_embedded_update_id=EMBEDDED)
    assert update_id in resp.text


def post_events(client: httpx.Client, slug: str, device: str, events: list[dict[str, Any]]) -> None:
    resp = client.post(
        "/api/v1/events", json={"deviceId": device, "projectId": slug, "events": events}
    )
    assert resp.status_code == 202, resp.text


@contextmanager
def database(server: ServerProcess) -> Iterator[Engine]:
    """An engine on the server's database (read-only use)."""
    engine = create_db_engine(server.database_url, pool_size=1)
    try:
        yield engine
    finally:
        engine.dispose()


def row_counts(engine: Engine, project_id: str) -> dict[str, int]:
    """Rows per statistics table for one project (tables are named, not imported, so the
    tests also run against a schema from before a table existed)."""
    present = set(inspect(engine).get_table_names())
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        for name in STATS_TABLES:
            if name in present:
                rows = table(name, column("project_id"))
                counts[name] = int(
                    conn.execute(
                        select(func.count())
                        .select_from(rows)
                        .where(rows.c.project_id == project_id)
                    ).scalar_one()
                )
    return counts


def wait_until(done: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_flushed(server: ServerProcess, slug: str, project_id: str) -> None:
    """Wait until everything the server recorded so far is flushed and its flush hooks (the
    auto-pause) ran: a sentinel device checks in and its row appears, twice in a row (a flush
    takes the whole batch, and flushes run one after another with their hooks)."""
    with database(server) as engine:
        for _ in range(2):
            sentinel = f"sentinel-{uuid.uuid4().hex}"
            with httpx.Client(base_url=server.url, timeout=30) as client:
                manifest(client, slug, eas_client_id=sentinel)

            def landed(device: str = sentinel) -> bool:
                with engine.connect() as conn:
                    return (
                        conn.execute(
                            select(func.count())
                            .select_from(DeviceState)
                            .where(
                                DeviceState.project_id == project_id,
                                DeviceState.device_id == device,
                            )
                        ).scalar_one()
                        == 1
                    )

            wait_until(landed, "the stats flush")


def rollout(server: ServerProcess, update_id: str) -> int:
    with database(server) as engine, engine.connect() as conn:
        return int(conn.execute(select(Update.rollout).where(Update.id == update_id)).scalar_one())
