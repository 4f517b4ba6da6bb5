"""Test harness: real ``lumora serve`` processes over real databases.

``ServerProcess`` starts the server as a subprocess on a free port, waits for ``/health`` and
can stop it gracefully or kill it with SIGKILL. ``DatabaseProvider`` hands out a fresh SQLite
file or a fresh PostgreSQL database (created on 127.0.0.1:5432 and dropped afterwards).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get(
    "LUMORA_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PG_HOST_URL = PG_ADMIN_URL.rsplit("/", 1)[0]


def free_port() -> int:
    """A TCP port nobody listens on right now.

    Drawn below the kernel's ephemeral range so outgoing connections never hold it, and
    checked both by binding and by connecting: granian binds with SO_REUSEPORT, so a bind
    alone would not notice another test server already listening there.
    """
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as probe:
            probe.settimeout(0.2)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port found")


class PortClash(RuntimeError):
    """Another server answered on the port this one was started on."""


def lumora_bin() -> str:
    """The ``lumora`` executable of the interpreter running the tests."""
    candidate = Path(sys.executable).parent / "lumora"
    return str(candidate) if candidate.exists() else "lumora"


def create_pg_database() -> str:
    """Create an empty PostgreSQL database; returns its SQLAlchemy URL."""
    import psycopg

    name = f"lumora_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG_HOST_URL}/{name}"


def drop_pg_database(url: str) -> None:
    """Drop a database made by ``create_pg_database`` (terminating leftover sessions)."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def database_url_for(backend: str, data_dir: Path) -> str:
    """A fresh database of the given backend."""
    if backend == "sqlite":
        return f"sqlite:///{data_dir / 'lumora.db'}"
    if backend == "postgres":
        return create_pg_database()
    raise ValueError(backend)


@dataclass
class ServerProcess:
    """One running ``lumora serve``."""

    data_dir: Path
    database_url: str
    admin_key: str = field(default_factory=lambda: "lum_test_" + secrets.token_urlsafe(24))
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    storage_url: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    instance: str = field(default_factory=lambda: uuid.uuid4().hex)

    def start(self, timeout: float = 60.0) -> ServerProcess:
        """Start the server and wait until it, and only it, answers on its port."""
        for _attempt in range(3):
            try:
                return self._start_once(timeout)
            except PortClash:
                self.kill()
                self.port = free_port()
        raise RuntimeError("could not get a port of its own for the test server")

    def _owns_port(self) -> bool:
        for _ in range(5):
            body = httpx.get(f"{self.url}/health", headers=self.key_header, timeout=5).json()
            if body.get("instance") != self.instance:
                return False
        return True

    def _start_once(self, timeout: float) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUMORA_")}
        env.update(
            {
                "LUMORA_BOOTSTRAP_ADMIN_KEY": self.admin_key,
                "LUMORA_CACHE_POLL_INTERVAL": "0.2",
                "LUMORA_STATS_FLUSH_INTERVAL": "0.2",
                "LUMORA_INSTANCE_NAME": self.instance,
                # The suite makes thousands of deliberate wrong-key requests from one
                # address; the throttle's own test turns it on (test_security_attacks).
                "LUMORA_AUTH_FAILURE_LIMIT": "off",
            }
        )
        env.update(self.extra_env)
        args = [
            lumora_bin(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--database-url",
            self.database_url,
            *(["--storage-url", self.storage_url] if self.storage_url else []),
            *self.extra_args,
        ]
        self.log_path = self.data_dir / f"server-{self.port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        # stdin from /dev/null: with fd 0 closed in the test process, the server's runtime
        # could get fd 0 for its own use and lose it when the worker "closes stdin".
        self.proc = subprocess.Popen(
            args, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                resp = httpx.get(f"{self.url}/health", headers=self.key_header, timeout=1)
                if resp.status_code in (200, 401):  # 401: another server, not our key
                    if resp.json().get("instance") == self.instance and self._owns_port():
                        return self
                    raise PortClash(self.url)
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    @property
    def key_header(self) -> dict[str, str]:
        """The ``Authorization`` header of the admin key (``/health`` details need a key)."""
        return {"authorization": f"Bearer {self.admin_key}"}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM), then SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the server and its workers at once, as a crash would."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            for child in _children(self.proc.pid):
                os.kill(child, signal.SIGKILL)
            self.proc.kill()
        self.proc.wait()

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client for this server, authorised with ``key`` (default: the admin key)."""
        headers = {"authorization": f"Bearer {key or self.admin_key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def anon(self, **kwargs: Any) -> httpx.Client:
        """An httpx client with no key (device endpoints). Like a device, it follows
        redirects: with an S3 store, asset URLs answer 302 to the object."""
        kwargs.setdefault("follow_redirects", True)
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


def _children(pid: int) -> list[int]:
    try:
        out = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
        ).stdout
    except FileNotFoundError:
        return []
    kids = [int(p) for p in out.split()]
    return [g for k in kids for g in _children(k)] + kids


# ---------------------------------------------------------------- export-shaped test data


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_export(
    root: Path,
    *,
    runtime_version: str | None = "1",
    seed: str = "",
    n_assets: int = 2,
    platforms: tuple[str, ...] = ("ios", "android"),
) -> Path:
    """Write an ``expo export``-shaped directory (metadata.json, bundles/, assets/)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "bundles").mkdir(exist_ok=True)
    (root / "assets").mkdir(exist_ok=True)
    file_meta: dict[str, Any] = {}
    assets = []
    for i in range(n_assets):
        data = f"asset {i} {seed}".encode() * 50
        name = hashlib.md5(data).hexdigest()
        (root / "assets" / name).write_bytes(data)
        assets.append({"path": f"assets/{name}", "ext": "png" if i % 2 == 0 else "ttf"})
    for platform in platforms:
        bundle = f"// {platform} bundle {seed}\nconsole.log('hello {seed}');\n".encode() * 20
        name = f"bundles/{platform}-{hashlib.md5(bundle).hexdigest()}.js"
        (root / name).write_bytes(bundle)
        file_meta[platform] = {"bundle": name, "assets": assets}
    (root / "metadata.json").write_text(
        json.dumps({"version": 0, "bundler": "metro", "fileMetadata": file_meta})
    )
    if runtime_version is not None:
        (root / "expoConfig.json").write_text(
            json.dumps({"name": "test-app", "slug": "test-app", "runtimeVersion": runtime_version})
        )
    return root


def iter_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path


# ---------------------------------------------------------------- publishing through the API

_CONTENT_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "ttf": "font/ttf",
    "js": "application/javascript",
}


def export_publish_body(
    root: Path,
    project: str,
    *,
    channel: str = "production",
    runtime_version: str = "1",
    message: str = "",
    rollout: int = 100,
    platforms: tuple[str, ...] | None = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """The ``POST /updates/publish`` body for an expo-export directory, and sha256 -> file."""
    meta = json.loads((root / "metadata.json").read_text())["fileMetadata"]
    files: dict[str, Path] = {}

    def entry(rel: str, ext: str) -> dict[str, Any]:
        path = root / rel
        sha = sha256_hex(path.read_bytes())
        files[sha] = path
        return {
            "key": rel,
            "sha256": sha,
            "contentType": _CONTENT_TYPES.get(ext, "application/octet-stream"),
            "fileExtension": f".{ext}",
        }

    body_platforms = {
        name: {
            "launchAsset": entry(spec["bundle"], "js"),
            "assets": [entry(a["path"], a["ext"]) for a in spec["assets"]],
        }
        for name, spec in meta.items()
        if platforms is None or name in platforms
    }
    body: dict[str, Any] = {
        "project": project,
        "channel": channel,
        "runtimeVersion": runtime_version,
        "message": message,
        "rollout": rollout,
        "platforms": body_platforms,
    }
    if (root / "expoConfig.json").exists():
        body["extra"] = {"expoClient": json.loads((root / "expoConfig.json").read_text())}
    return body, files


def upload_missing(client: httpx.Client, project: str, files: dict[str, Path]) -> int:
    """Upload the files the server reports missing; returns the number of bytes sent."""
    resp = client.post("/api/v1/assets/missing", json={"project": project, "hashes": list(files)})
    resp.raise_for_status()
    sent = 0
    for sha in resp.json()["missing"]:
        data = files[sha].read_bytes()
        put = client.put(f"/api/v1/assets/{sha}", params={"project": project}, content=data)
        put.raise_for_status()
        sent += len(data)
    return sent


def publish_export(
    client: httpx.Client, project: str, root: Path, **options: Any
) -> tuple[dict[str, Any], int]:
    """Publish an expo-export directory through the API (missing -> upload -> publish).

    Returns the publish answer and the number of bytes uploaded. ``options`` go to
    ``export_publish_body``.
    """
    body, files = export_publish_body(root, project, **options)
    sent = upload_missing(client, project, files)
    resp = client.post("/api/v1/updates/publish", json=body)
    if resp.status_code != 201:
        raise AssertionError(f"publish failed: {resp.status_code} {resp.text}")
    answer: dict[str, Any] = resp.json()
    return answer, sent


def create_project(client: httpx.Client, slug: str, name: str | None = None) -> dict[str, Any]:
    """Create a project through the API; returns its JSON."""
    resp = client.post("/api/v1/projects", json={"name": name or slug, "slug": slug})
    if resp.status_code != 201:
        raise AssertionError(f"creating project failed: {resp.status_code} {resp.text}")
    project: dict[str, Any] = resp.json()
    return project


def publish_dir(
    client: httpx.Client,
    project: str,
    root: Path,
    *,
    launch: str,
    platforms: tuple[str, ...] = ("ios",),
    channel: str = "production",
    runtime_version: str = "1",
    message: str = "",
    rollout: int = 100,
    mandatory: bool = False,
) -> dict[str, Any]:
    """Publish every file under ``root`` (keys = relative paths; ``launch`` is the launch
    asset) for ``platforms`` through the API: missing -> upload -> publish. Returns the
    publish answer; ``answer["updates"][i]["id"]`` are the per-platform update ids."""
    files: dict[str, Path] = {}

    def entry(path: Path) -> dict[str, Any]:
        sha = sha256_hex(path.read_bytes())
        files[sha] = path
        ext = path.suffix
        return {
            "key": path.relative_to(root).as_posix(),
            "sha256": sha,
            "contentType": _CONTENT_TYPES.get(ext.lstrip("."), "application/octet-stream"),
            "fileExtension": ext,
        }

    launch_path = root / launch
    spec = {
        "launchAsset": entry(launch_path),
        "assets": [entry(p) for p in iter_files(root) if p != launch_path],
    }
    body = {
        "project": project,
        "channel": channel,
        "runtimeVersion": runtime_version,
        "message": message,
        "rollout": rollout,
        "mandatory": mandatory,
        "platforms": {name: spec for name in platforms},
    }
    upload_missing(client, project, files)
    resp = client.post("/api/v1/updates/publish", json=body)
    if resp.status_code != 201:
        raise AssertionError(f"publish failed: {resp.status_code} {resp.text}")
    answer: dict[str, Any] = resp.json()
    return answer
