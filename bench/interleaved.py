"""nginx and granian variants measured in turns on the data a bench run left behind.

On a shared machine the load moves between scenarios, so a ratio to an nginx figure taken
minutes earlier is mostly noise. Here every round measures nginx and then each variant for a
few seconds, and each ratio is taken against the nginx slice of its own round (the median
over rounds is reported). The variants are granian command-line options; the server is the
application factory on the bench's data directory, one worker unless a variant says
otherwise:

    python bench/run.py --servers granian --duration 5 --updates 100 --workdir /tmp/b
    python bench/interleaved.py --workdir /tmp/b --rounds 5 --seconds 3 \\
        --variant "--interface rsgi" --variant "--interface asgi" --scenario expo_no_update
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(REPO_ROOT))

from bench.processes import free_port, nginx_executable  # noqa: E402
from bench.scenarios import EXPECT_SIGNATURE, manifest_headers  # noqa: E402
from bench.wrk import LoadSpec, run_wrk  # noqa: E402

MANIFEST_PATH = "/api/v1/expo/bench-app/manifest"
FACTORY = "lumora_ota.server.app:create_app_from_env"


def _served_id(port: int) -> str:
    """The production android head, from a signed manifest request (for ``noUpdate``)."""
    resp = httpx.get(f"http://127.0.0.1:{port}{MANIFEST_PATH}", headers=manifest_headers())
    found = re.search(rb'"id":\s*"([0-9a-f-]{36})"', resp.content)
    if found is None:
        raise SystemExit(f"no manifest id in the answer: {resp.status_code}")
    return found[1].decode()


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the process exited")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=2)
            return
        time.sleep(0.3)
    raise SystemExit(f"{url} did not answer")


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print each one and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a bench run's --workdir")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--scenario", choices=("expo_manifest_signed", "expo_no_update"))
    parser.add_argument("--variant", action="append", help="granian options, repeatable")
    args = parser.parse_args(argv)
    variants: list[str] = args.variant or ["--interface rsgi", "--interface asgi"]
    nginx_binary = nginx_executable()
    conf = args.workdir / "nginx" / "nginx.conf"
    if nginx_binary is None or not conf.exists():
        raise SystemExit("needs nginx and a bench run's --workdir (its nginx/nginx.conf)")
    listen = re.search(r"listen 127\.0\.0\.1:(\d+)", conf.read_text())
    assert listen is not None
    env = dict(os.environ, LUMORA_DATA_DIR=str(args.workdir / "data"))
    procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        root = str(args.workdir / "nginx")
        nginx = subprocess.Popen(
            [nginx_binary, "-p", root, "-c", str(conf), "-e", f"{root}/error.log"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs["nginx"] = (nginx, f"http://127.0.0.1:{listen[1]}/manifest")
        for variant in variants:
            port = free_port()
            command = [sys.executable, "-m", "granian", "--factory", "--host", "127.0.0.1"]
            command += ["--port", str(port), "--workers", "1", "--http", "1", "--no-ws"]
            proc = subprocess.Popen(
                [*command, *variant.split(), FACTORY],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs[variant] = (proc, f"http://127.0.0.1:{port}{MANIFEST_PATH}")
        for proc, url in procs.values():
            _wait(url, proc)
        headers = manifest_headers()
        if args.scenario == "expo_no_update":
            first = procs[variants[0]][1]
            port = int(first.split(":")[2].split("/")[0])
            headers["expo-current-update-id"] = _served_id(port)
        assert headers["expo-expect-signature"] == EXPECT_SIGNATURE
        ratios: dict[str, list[float]] = {v: [] for v in variants}
        for turn in range(args.rounds):
            rates: dict[str, float] = {}
            p99: dict[str, float] = {}
            for name, (_proc, url) in procs.items():
                load = run_wrk(
                    LoadSpec(url, headers=headers),
                    duration=args.seconds,
                    connections=args.connections,
                    threads=1,
                    workdir=args.workdir,
                    name=f"interleaved-{turn}",
                )
                rates[name], p99[name] = load.requests_per_second, load.p99_ms
            for variant in variants:
                ratios[variant].append(rates[variant] / rates["nginx"])
            print(
                f"round {turn + 1}: nginx {rates['nginx']:,.0f} req/s; "
                + "; ".join(
                    f"[{v}] {rates[v]:,.0f} req/s ({rates[v] / rates['nginx']:.2f}x, "
                    f"p99 {p99[v]:.1f} ms)"
                    for v in variants
                ),
                flush=True,
            )
        for variant in variants:
            values = ", ".join(f"{r:.2f}" for r in ratios[variant])
            print(f"[{variant}] median {statistics.median(ratios[variant]):.2f}x ({values})")
    finally:
        for proc, _url in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
