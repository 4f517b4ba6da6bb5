"""``lumora serve`` becomes a lean supervisor (``python -m lumora_ota.server.launch``): the
process tree, the environment its workers get, migrating once before the workers start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect

from harness import ServerProcess, _children, lumora_bin
from lumora_ota.server.launch import command
from lumora_ota.store.db import MIGRATED_ENV, create_db_engine, migrate, migration_stamp


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def _start(tmp_path: Path, **kwargs: object) -> ServerProcess:
    data_dir = tmp_path / "data"
    return ServerProcess(data_dir, f"sqlite:///{data_dir / 'lumora.db'}", **kwargs).start()  # type: ignore[arg-type]


def test_launch_command() -> None:
    argv = command(
        server="granian", host="0.0.0.0", port=8080, workers=3, log_level="info", python="py"
    )
    assert argv == [
        "py", "-m", "lumora_ota.server.launch", "--server", "granian", "--host", "0.0.0.0",
        "--port", "8080", "--workers", "3", "--log-level", "info",
    ]  # fmt: skip


def test_serve_execs_a_lean_supervisor_with_its_workers(tmp_path: Path) -> None:
    server = _start(tmp_path, extra_args=["--workers", "2"])
    try:
        assert server.proc is not None
        root = server.proc.pid
        argv = _cmdline(root)
        # Same PID as the ``lumora serve`` the harness started: it replaced itself.
        assert argv[1:3] == ["-m", "lumora_ota.server.launch"]
        assert argv[argv.index("--port") + 1] == str(server.port)
        assert argv[argv.index("--workers") + 1] == "2"
        workers = _children(root)
        assert len(workers) == 2
        for pid in [root, *workers]:
            env = _environ(pid)
            assert env["LUMORA_DATA_DIR"] == str(server.data_dir)
            assert env[MIGRATED_ENV]
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        server.stop()
        assert server.proc.returncode == 0  # SIGTERM: graceful stop of the whole tree
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    finally:
        server.kill()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_serve_with_uvicorn_runs_through_the_launcher(tmp_path: Path) -> None:
    server = _start(tmp_path, extra_args=["--server", "uvicorn"])
    try:
        assert server.proc is not None
        argv = _cmdline(server.proc.pid)
        assert argv[argv.index("--server") + 1] == "uvicorn"
        health = httpx.get(f"{server.url}/health", headers=server.key_header, timeout=5)
        assert health.json()["instance"] == server.instance
        server.stop()
        # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully.
        assert server.proc.returncode in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.log()
    finally:
        server.kill()


@pytest.mark.parametrize(("option", "value"), [("--server", "gunicorn"), ("--log-level", "loud")])
def test_serve_rejects_bad_options_before_starting(tmp_path: Path, option: str, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMORA_")}
    proc = subprocess.run(
        [lumora_bin(), "serve", "--data-dir", str(tmp_path / "d"), option, value],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert option in proc.stderr


@pytest.mark.parametrize(
    ("variable", "value", "kind"),
    [
        ("LUMORA_ASSET_MEMORY_BYTES", "32MB", "an integer"),
        ("LUMORA_PATCH_MAX_RATIO", "half", "a number"),
        # Out of range or unusable (issue 18): refused before anything starts, not after
        # "Listening" (a 0 poll interval ran thousands of queries a second; a bad rate limit
        # or storage URL killed every worker with a traceback).
        ("LUMORA_CACHE_POLL_INTERVAL", "0", "at least 0.05"),
        ("LUMORA_RATE_LIMIT_PER_IP", "ten", "RATE[/BURST] requests per second, or off"),
        ("LUMORA_STORAGE_URL", "ftp://bucket", "a file:// or s3:// URL"),
        ("LUMORA_DATABASE_URL", "mysql://db", "a sqlite:// or postgresql:// URL"),
        ("LUMORA_WORKERS", "0", "at least 1"),
    ],
)
def test_serve_rejects_a_malformed_setting_in_one_line(
    tmp_path: Path, variable: str, value: str, kind: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMORA_")}
    proc = subprocess.run(
        [lumora_bin(), "serve", "--data-dir", str(tmp_path / "d")],
        env={**env, variable: value},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {variable} must be {kind}, not {value!r}"
    assert "Listening" not in proc.stdout + proc.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was created


# ---------------------------------------------------------------- migrating once, in the CLI

_MIGRATE_WITH_STAMP = """
import os, sys
from lumora_ota.store.db import MIGRATED_ENV, create_db_engine, migrate, migration_stamp
engine = create_db_engine(sys.argv[1])
os.environ[MIGRATED_ENV] = migration_stamp(create_db_engine(sys.argv[2]))
migrate(engine)
print("alembic" in sys.modules)
"""


def _migrate_in_subprocess(url: str, stamped_url: str) -> bool:
    """Run ``migrate(url)`` in a fresh interpreter whose stamp names ``stamped_url``;
    returns whether Alembic got imported."""
    out = subprocess.run(
        [sys.executable, "-c", _MIGRATE_WITH_STAMP, url, stamped_url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return out.strip() == "True"


def test_migrate_skips_when_the_stamp_names_this_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert _migrate_in_subprocess(url, url) is False
    engine = create_db_engine(url)
    try:
        assert "alembic_version" not in inspect(engine).get_table_names()  # trusted the stamp
    finally:
        engine.dispose()


def test_migrate_runs_when_the_stamp_names_another_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert _migrate_in_subprocess(url, f"sqlite:///{tmp_path / 'b.db'}") is True
    engine = create_db_engine(url)
    try:
        assert "alembic_version" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_stamp_depends_on_database_and_migrations(tmp_path: Path) -> None:
    a = create_db_engine(f"sqlite:///{tmp_path / 'a.db'}")
    b = create_db_engine(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        assert migration_stamp(a) == migration_stamp(a)
        assert migration_stamp(a) != migration_stamp(b)
        migrate(a)  # no stamp in this process: migrates
        assert "alembic_version" in inspect(a).get_table_names()
    finally:
        a.dispose()
        b.dispose()


def test_served_database_is_migrated_and_workers_are_told(tmp_path: Path) -> None:
    server = _start(tmp_path)
    try:
        assert server.proc is not None
        engine = create_db_engine(server.database_url)
        try:
            assert "alembic_version" in inspect(engine).get_table_names()
            stamp = migration_stamp(engine)
        finally:
            engine.dispose()
        for pid in [server.proc.pid, *_children(server.proc.pid)]:
            assert _environ(pid)[MIGRATED_ENV] == stamp
    finally:
        server.stop()


# ---------------------------------------------------------------- one server per port


@pytest.mark.parametrize("impl", ["granian", "uvicorn"])
def test_a_second_serve_on_a_busy_port_fails(tmp_path: Path, impl: str) -> None:
    first = _start(tmp_path)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUMORA_")}
        second = subprocess.Popen(
            [
                lumora_bin(), "serve", "--host", "127.0.0.1", "--port", str(first.port),
                "--data-dir", str(tmp_path / "second"), "--server", impl,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # so a server that did start is stopped with its workers
        )  # fmt: skip
        try:
            _out, stderr = second.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait()
            raise AssertionError("a second server started on a busy port") from None
        assert second.returncode != 0
        assert "address already in use" in stderr
        assert f"127.0.0.1:{first.port}" in stderr
        # Every request still reaches the first server.
        for _ in range(10):
            body = httpx.get(f"{first.url}/health", headers=first.key_header, timeout=5).json()
            assert body["instance"] == first.instance
    finally:
        first.stop()


def test_serve_refuses_accel_redirect_with_an_object_store(tmp_path: Path) -> None:
    """nginx can only send local files: X-Accel-Redirect with an S3 store is refused in one
    line before anything starts (not ignored, which would leave nginx's location unused)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMORA_")}
    proc = subprocess.run(
        [lumora_bin(), "serve", "--data-dir", str(tmp_path / "d"),
         "--storage-url", "s3://bucket?endpoint=http://127.0.0.1:9"],
        env={**env, "LUMORA_ACCEL_REDIRECT_PREFIX": "/_lumora_blobs/"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: LUMORA_ACCEL_REDIRECT_PREFIX needs the file store"
    ), proc.stderr
    assert "Listening" not in proc.stdout + proc.stderr
    assert not (tmp_path / "d").exists()
