"""nginx in front of ``lumora serve`` with the documented configuration.

``docs/nginx/lumora.conf`` is the configuration docs/DEPLOYMENT.md shows. ``local_config``
takes it as it is and replaces only its example values (the upstream servers, the listen
address, the TLS files, the blob folder) for a run on loopback; each must be found exactly
once, so a change to the documented file that this does not understand fails loudly instead
of testing something else. ``NginxProxy`` runs it (the end-to-end test in
tests/test_nginx_accel.py and the benchmark's ``asset_1mb_br_accel`` scenario).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from bench.processes import StartedProcess, _wait_http, free_port, nginx_executable

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENT_CONF = REPO_ROOT / "docs" / "nginx" / "lumora.conf"
# The documented LUMORA_ACCEL_REDIRECT_PREFIX (the internal location of the config).
ACCEL_PREFIX = "/_lumora_blobs/"
EXAMPLE_UPSTREAMS = re.compile(r"^(\s*)server 10\.0\.0\.\d+:3002 (.*);\n", re.MULTILINE)
EXAMPLE_LISTEN = "listen 443 ssl http2;"
EXAMPLE_CERT = "/etc/ssl/ota.example.com.crt"
EXAMPLE_KEY = "/etc/ssl/ota.example.com.key"
EXAMPLE_BLOBS = "alias /var/lib/lumora/blobs/;"
TLS_LINES = re.compile(r"^\s*ssl_certificate(_key)?\s.*\n", re.MULTILINE)

MAIN_CONF = """\
{user}worker_processes 1;
daemon off;
master_process on;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    default_type application/octet-stream;
    access_log {access_log};
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    tcp_nodelay on;
    # As the benchmark's reference nginx: wrk's connections are never closed for a count.
    keepalive_requests 100000000;
    include {site};
{reference}}}
"""
# The benchmark's reference: the same nginx sending the blob folder's files directly.
REFERENCE_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        root {blobs};
        sendfile on;
        tcp_nopush on;
        location / {{
            types {{ }}
            default_type application/javascript;
            add_header Cache-Control "public, max-age=31536000, immutable";
        }}
    }}
"""


class ConfigMismatch(RuntimeError):
    """The documented configuration no longer has an example value this replaces."""


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise ConfigMismatch(f"{DEPLOYMENT_CONF.name}: expected {old!r} exactly once")
    return text.replace(old, new)


def local_config(
    template: str,
    *,
    port: int,
    upstream_port: int,
    blobs_dir: Path,
    tls: tuple[Path, Path] | None,
) -> str:
    """The documented site configuration for loopback: listening on 127.0.0.1:``port`` (TLS
    with ``tls`` = (certificate, key) files, else plain HTTP), one upstream at
    127.0.0.1:``upstream_port``, the blob folder ``blobs_dir``. ``ConfigMismatch`` when an
    example value is missing or repeated."""
    upstreams = EXAMPLE_UPSTREAMS.findall(template)
    if not upstreams:
        raise ConfigMismatch(f"{DEPLOYMENT_CONF.name}: no example upstream server line")
    indent, options = upstreams[0]
    text = EXAMPLE_UPSTREAMS.sub("", template, count=len(upstreams) - 1)
    text = EXAMPLE_UPSTREAMS.sub(f"{indent}server 127.0.0.1:{upstream_port} {options};\n", text)
    text = _replace_once(text, EXAMPLE_BLOBS, f"alias {blobs_dir.resolve()}/;")
    if tls is not None:
        text = _replace_once(text, EXAMPLE_LISTEN, f"listen 127.0.0.1:{port} ssl http2;")
        text = _replace_once(text, EXAMPLE_CERT, str(tls[0]))
        return _replace_once(text, EXAMPLE_KEY, str(tls[1]))
    text = _replace_once(text, EXAMPLE_LISTEN, f"listen 127.0.0.1:{port};")
    if len(TLS_LINES.findall(text)) != 2:
        raise ConfigMismatch(f"{DEPLOYMENT_CONF.name}: expected two ssl_certificate lines")
    return TLS_LINES.sub("", text)


@dataclass
class NginxProxy(StartedProcess):
    """One nginx (one worker) running the documented configuration in front of a
    ``lumora serve`` on ``upstream_port`` started with
    ``LUMORA_ACCEL_REDIRECT_PREFIX=ACCEL_PREFIX`` over ``blobs_dir``."""

    WHAT: ClassVar[str] = "nginx"

    root: Path
    upstream_port: int
    blobs_dir: Path
    tls: tuple[Path, Path] | None = None
    access_log: bool = True
    # Also serve ``blobs_dir`` directly on ``reference_port`` (the benchmark's reference).
    reference: bool = False
    port: int = field(default_factory=free_port)
    reference_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL (https with ``tls``)."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def reference_url(self) -> str:
        """Base URL of the blob folder served directly (with ``reference``)."""
        return f"http://127.0.0.1:{self.reference_port}"

    def config(self) -> str:
        """The main configuration; the site file (``lumora.conf``) is written beside it."""
        site = self.root / "lumora.conf"
        site.write_text(
            local_config(
                DEPLOYMENT_CONF.read_text(),
                port=self.port,
                upstream_port=self.upstream_port,
                blobs_dir=self.blobs_dir,
                tls=self.tls,
            )
        )
        # As root, nginx workers would drop to "nobody", who may not read a private temp
        # dir (pytest's is 0700); keep them as the user that owns the files.
        user = "user root;\n" if os.geteuid() == 0 else ""
        log = f"{self.root}/access.log" if self.access_log else "off"
        reference = ""
        if self.reference:
            blobs = self.blobs_dir.resolve()
            reference = REFERENCE_SERVER.format(port=self.reference_port, blobs=blobs)
        return MAIN_CONF.format(
            user=user, root=self.root, access_log=log, site=site, reference=reference
        )

    def start(self, timeout: float = 15.0) -> NginxProxy:
        """Write the configuration, check it (``nginx -t``), start nginx in the foreground
        and wait until it answers."""
        binary = nginx_executable()
        if binary is None:
            raise RuntimeError("nginx is not installed")
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        conf = self.root / "nginx.conf"
        conf.write_text(self.config())
        command = [
            binary,
            "-p",
            str(self.root),
            "-c",
            str(conf),
            "-e",
            str(self.root / "error.log"),
        ]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
        if checked.returncode != 0:
            raise RuntimeError(f"nginx refused the configuration:\n{checked.stderr}")
        log = self.root / "nginx.out"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _wait_http(f"{self.url}/health", self.proc, log, timeout, verify=False)
        return self
