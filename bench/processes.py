"""The processes under test: ``lumora serve`` as production runs it, and the nginx reference.

Both listen on a free 127.0.0.1 port and are stopped by the pid we started, never by name.
``ResourceSampler`` watches a process tree (the server and its workers) while a load runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import httpx
import psutil


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def lumora_executable() -> str:
    """The ``lumora`` command of the interpreter running the benchmark."""
    candidate = Path(sys.executable).parent / "lumora"
    return str(candidate) if candidate.exists() else "lumora"


def nginx_executable() -> str | None:
    """The nginx binary (Debian puts it in /usr/sbin, often off a user's PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
        proc.kill()
        proc.wait()


def _wait_http(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float, *, verify: bool = True
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited early:\n{log.read_text(errors='replace')[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1, verify=verify).status_code < 500:
                return
        time.sleep(0.1)
    _stop(proc)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s")


class StartedProcess:
    """``stop`` and ``pid`` of the process a bench object started (its ``proc``)."""

    proc: subprocess.Popen[bytes] | None
    WHAT: ClassVar[str] = "process"

    def stop(self) -> None:
        """Graceful stop (SIGTERM to the process we started), SIGKILL if it hangs."""
        if self.proc is not None:
            _stop(self.proc)

    @property
    def pid(self) -> int:
        """The started process's id (the server's main process, the nginx master)."""
        if self.proc is None:
            raise RuntimeError(f"{self.WHAT} not started")
        return self.proc.pid


@dataclass
class LumoraServer(StartedProcess):
    """One ``lumora serve`` with production defaults: one worker, no test-only tuning.

    Only the bootstrap admin key is passed in the environment (that is how automation gets
    its first key); every other setting is the documented default except the data dir, port
    and server implementation under test.
    """

    WHAT: ClassVar[str] = "server"

    data_dir: Path
    admin_key: str
    impl: str = "granian"
    database_url: str | None = None
    workers: int = 1
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    # Settings a scenario is about (``LUMORA_ACCEL_REDIRECT_PREFIX``), shown in the report.
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where the server's output goes."""
        return self.data_dir / f"server-{self.impl}-{self.port}.log"

    def command(self) -> list[str]:
        """The exact command line, for the report."""
        args = [
            *(f"{name}={value}" for name, value in self.extra_env.items()),
            lumora_executable(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--workers",
            str(self.workers),
            "--server",
            self.impl,
        ]
        if self.database_url:
            args += ["--database-url", self.database_url]
        return args

    def start(self, timeout: float = 60.0) -> LumoraServer:
        """Start and wait for ``/health``."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUMORA_")}
        env["LUMORA_BOOTSTRAP_ADMIN_KEY"] = self.admin_key
        env.update(self.extra_env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command()[len(self.extra_env) :],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_http(f"{self.url}/health", self.proc, self.log_path, timeout)
        return self


NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
master_process on;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 120;
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
        location = /manifest {{
            types {{ }}
            default_type "{manifest_type}";
{manifest_headers}
        }}
        location = /asset.js {{
            types {{ }}
            default_type "application/javascript";
            add_header Content-Encoding br;
            add_header Vary Accept-Encoding;
            add_header Cache-Control "public, max-age=31536000, immutable";
        }}
    }}
}}
"""


@dataclass
class NginxReference(StartedProcess):
    """nginx with one worker serving two static files: the signed manifest response's exact
    bytes (with its content-type and Expo headers) and the brotli bytes of the 1 MB asset."""

    WHAT: ClassVar[str] = "nginx"

    root: Path
    manifest_body: bytes
    manifest_headers: dict[str, str]
    asset_br: bytes
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        headers = {k.lower(): v for k, v in self.manifest_headers.items()}
        content_type = headers.pop("content-type")
        copied = "\n".join(
            f'            add_header {name} "{value}";'
            for name, value in headers.items()
            if name.startswith("expo-") or name == "cache-control"
        )
        # As root, nginx workers would drop to "nobody", who may not reach a private temp dir
        # (pytest's is 0700); keep them as the user that owns the files.
        user = "user root;\n" if os.geteuid() == 0 else ""
        return NGINX_CONF.format(
            user=user,
            root=self.root,
            port=self.port,
            manifest_type=content_type.replace('"', '\\"'),
            manifest_headers=copied,
        )

    def start(self) -> NginxReference:
        """Write the files and config into ``root`` and start nginx in the foreground."""
        binary = nginx_executable()
        if binary is None:
            raise RuntimeError("nginx is not installed")
        www = self.root / "www"
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        www.mkdir(parents=True, exist_ok=True)
        (www / "manifest").write_bytes(self.manifest_body)
        (www / "asset.js").write_bytes(self.asset_br)
        conf = self.root / "nginx.conf"
        conf.write_text(self._config())
        log = self.root / "nginx.out"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [binary, "-p", str(self.root), "-c", str(conf), "-e", str(self.root / "error.log")],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _wait_http(f"{self.url}/manifest", self.proc, log, 15.0)
        return self


@dataclass
class ResourceUse:
    """Peak resident memory and CPU time of a process tree over an interval. The main
    process (a supervisor, for granian and uvicorn with workers) and its descendants (the
    workers) are also given apart."""

    peak_rss_bytes: int
    peak_main_rss_bytes: int
    peak_workers_rss_bytes: int
    cpu_seconds: float


class ResourceSampler:
    """Samples the RSS of a process and all its descendants in a background thread."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self._root = psutil.Process(pid)
        self._interval = interval
        self._peak = (0, 0, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu_start = 0.0

    def _tree(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return [self._root, *self._root.children(recursive=True)]
        return [self._root]

    def _cpu(self) -> float:
        total = 0.0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def rss(self) -> tuple[int, int, int]:
        """The current RSS of the whole tree, of the main process, of its descendants."""
        main = workers = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                if proc.pid == self._root.pid:
                    main = proc.memory_info().rss
                else:
                    workers += proc.memory_info().rss
        return main + workers, main, workers

    def _sample(self) -> None:
        now = self.rss()
        self._peak = (
            max(self._peak[0], now[0]),
            max(self._peak[1], now[1]),
            max(self._peak[2], now[2]),
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def __enter__(self) -> ResourceSampler:
        self._cpu_start = self._cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        total, main, workers = self._peak
        self.result = ResourceUse(total, main, workers, self._cpu() - self._cpu_start)
