"""Shared fixtures: real server processes on SQLite and PostgreSQL, fixture paths."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import REPO_ROOT, ServerProcess, database_url_for, drop_pg_database

BACKENDS = [b for b in os.environ.get("LUMORA_TEST_BACKENDS", "sqlite,postgres").split(",") if b]
SHARED_FIXTURES = Path(
    os.environ.get("LUMORA_FIXTURES_DIR", str(REPO_ROOT.parent / "shared" / "fixtures"))
)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The real ``expo export`` fixtures in ../shared/fixtures; skips when absent."""
    if not (SHARED_FIXTURES / "expo-export-1674170951" / "metadata.json").exists():
        pytest.skip("../shared/fixtures is not present")
    return SHARED_FIXTURES


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture(scope="session")
def server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ServerProcess]]:
    """Start extra servers: ``server_factory(backend, **kwargs)``; all stopped at the end.

    Pass ``database_url=`` to share a database between processes.
    """
    started: list[ServerProcess] = []
    databases: list[str] = []

    def start(backend: str = "sqlite", **kwargs: Any) -> ServerProcess:
        data_dir = tmp_path_factory.mktemp(f"srv-{backend}")
        db_url = kwargs.pop("database_url", None)
        if db_url is None:
            db_url = database_url_for(backend, data_dir)
            if backend == "postgres":
                databases.append(db_url)
        srv = ServerProcess(
            data_dir=kwargs.pop("data_dir", data_dir), database_url=db_url, **kwargs
        )
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        srv.stop()
    for url in databases:
        drop_pg_database(url)


@pytest.fixture(scope="session", params=BACKENDS)
def server(request: pytest.FixtureRequest, server_factory: ServerFactory) -> ServerProcess:
    """A shared server per database backend. Tests isolate themselves by making projects."""
    backend: str = request.param
    return server_factory(backend)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for slugs and names."""
    return uuid.uuid4().hex[:8]
