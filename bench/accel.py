"""The large asset through nginx + ``X-Accel-Redirect`` (issue 21 target 2).

A second ``lumora serve`` over the same data, started with
``LUMORA_ACCEL_REDIRECT_PREFIX``, behind nginx running the documented configuration
(docs/nginx/lumora.conf without TLS: ``bench/proxy.py``). The request is the one of
``asset_1mb_br``; the answer is checked the same way (brotli, decodes to the asset). It is
measured in turns with the nginx reference (``nginx_asset_br``: nginx sending the same brotli
bytes from a file of its own), half the duration each, twice, so drift on a shared machine
falls on both alike.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
from rich.console import Console

from bench.config import BenchConfig
from bench.dataset import LoadedData
from bench.processes import LumoraServer, ResourceSampler
from bench.proxy import ACCEL_PREFIX, NginxProxy
from bench.scenarios import (
    ProbeFailed,
    Scenario,
    ScenarioResult,
    _asset_probe,
    combine,
    measure,
    nginx_scenarios,
    probe,
)
from bench.wrk import LoadSpec
from lumora_ota.store.blobs import FileBlobStore

ACCEL_SCENARIO = "asset_1mb_br_accel"
REFERENCE = "nginx_asset_br"
# For information (no target): the same asset uncompressed, where bytes outweigh requests.
IDENTITY_SCENARIO = "asset_1mb_identity_accel"
IDENTITY_REFERENCE = "nginx_asset_identity"


def accel_scenario(proxy_url: str, data: LoadedData) -> Scenario:
    """``asset_1mb_br``'s request, sent to nginx in front of Lumora."""
    large = data.large_asset
    return Scenario(
        ACCEL_SCENARIO,
        LoadSpec(
            f"{proxy_url}/api/v1/assets/{large.sha256}{large.file_extension}",
            headers={"accept-encoding": "br"},
        ),
        _asset_probe(large.sha256),
        REFERENCE,
    )


def _wait_probe(scenario: Scenario, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe(scenario)
            return
        except (ProbeFailed, httpx.HTTPError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _identity_probe(expected_sha256: str) -> Callable[[httpx.Response], None]:
    def probe(resp: httpx.Response) -> None:
        if resp.status_code != 200 or "content-encoding" in resp.headers:
            raise ProbeFailed(f"{resp.status_code} {resp.headers.get('content-encoding')!r}")
        if hashlib.sha256(resp.content).hexdigest() != expected_sha256:
            raise ProbeFailed("the body is not the asset")

    return probe


def identity_pair(proxy: NginxProxy, data: LoadedData) -> tuple[Scenario, Scenario]:
    """The large asset uncompressed (1 MB: bytes outweigh the request), through the hand-over
    and from the same nginx serving the blob folder directly (``reference_url``)."""
    large = data.large_asset
    identity = {"accept-encoding": "identity"}
    reference = Scenario(
        IDENTITY_REFERENCE,
        LoadSpec(
            f"{proxy.reference_url}/{FileBlobStore.relative_path(large.sha256)}", headers=identity
        ),
        _identity_probe(large.sha256),
        None,
    )
    accel = Scenario(
        IDENTITY_SCENARIO,
        LoadSpec(
            f"{proxy.url}/api/v1/assets/{large.sha256}{large.file_extension}", headers=identity
        ),
        _identity_probe(large.sha256),
        IDENTITY_REFERENCE,
    )
    return reference, accel


def _measure_pair(
    reference: Scenario,
    scenario: Scenario,
    *,
    impl: str,
    reference_pid: int,
    server: LumoraServer,
    proxy: NginxProxy,
    cfg: BenchConfig,
    ctx: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reference and the scenario in turns (A B A B, half the duration each); their rows,
    the scenario's with its ratios and the CPU each request cost."""
    workdir = ctx["workdir"]
    _wait_probe(scenario)
    half = replace(cfg, duration=max(1.0, cfg.duration / 2))
    refs: list[ScenarioResult] = []
    runs: list[ScenarioResult] = []
    proxy_cpu = 0.0
    for turn in (1, 2):
        refs.append(
            measure(reference, server="nginx", pid=reference_pid, cfg=half, workdir=workdir,
                    tag=f"-{scenario.name}-{impl}-{turn}")
        )  # fmt: skip
        with ResourceSampler(proxy.pid) as proxy_use:
            runs.append(
                measure(scenario, server=impl, pid=server.pid, cfg=half, workdir=workdir,
                        profile=ctx["profile"], tag=f"-{turn}")
            )  # fmt: skip
        proxy_cpu += proxy_use.result.cpu_seconds
    ref, result = combine(refs), combine(runs)
    ref_row = ref.to_json()
    ref_row["paired_with"] = f"{impl} {scenario.name}"
    # CPU per request does not depend on how busy the shared machine is: the whole chain
    # (nginx in front + Lumora) against nginx sending the file alone.
    ref_row["cpu_us_per_request"] = round(ref.cpu_seconds / max(ref.requests, 1) * 1e6, 1)
    row = result.to_json()
    row["proxy_cpu_seconds"] = round(proxy_cpu, 3)
    row["cpu_us_per_request"] = round(
        (result.cpu_seconds + proxy_cpu) / max(result.requests, 1) * 1e6, 1
    )
    if ref.requests_per_second and ref.megabytes_per_second:
        row["nginx_ratio"] = round(result.requests_per_second / ref.requests_per_second, 3)
        row["throughput_ratio"] = round(result.megabytes_per_second / ref.megabytes_per_second, 3)
    return ref_row, row


def measure_accel(
    impl: str,
    cfg: BenchConfig,
    ctx: dict[str, Any],
    results: dict[str, Any],
    console: Console,
) -> None:
    """Measure ``asset_1mb_br_accel`` against ``nginx_asset_br``, then (for information)
    ``asset_1mb_identity_accel`` against nginx sending the same blob file, for one
    implementation; rows (and errors) go into ``results``."""
    workdir = ctx["workdir"]
    data: LoadedData = ctx["data"]
    server = LumoraServer(
        workdir / "data",
        ctx["admin_key"],
        impl,
        database_url=ctx["database_url_flag"],
        extra_env={"LUMORA_ACCEL_REDIRECT_PREFIX": ACCEL_PREFIX},
    )
    console.print(f"[bold]{impl}[/bold] behind nginx: starting {' '.join(server.command())}")
    server.start()
    results["commands"][f"{impl} (accel)"] = " ".join(server.command())
    root = workdir / f"nginx-accel-{impl}"
    root.mkdir(parents=True, exist_ok=True)
    proxy = NginxProxy(
        root, server.port, workdir / "data" / "blobs", access_log=False, reference=True
    )
    name = ACCEL_SCENARIO
    try:
        proxy.start()
        (br_reference,) = [s for s in nginx_scenarios(ctx["nginx"].url, signed=data.signed)
                           if s.name == REFERENCE]  # fmt: skip
        pairs = [
            (br_reference, accel_scenario(proxy.url, data), ctx["nginx"].pid),
            (*identity_pair(proxy, data), proxy.pid),
        ]
        for reference, scenario, reference_pid in pairs:
            name = scenario.name
            ref_row, row = _measure_pair(
                reference, scenario, impl=impl, reference_pid=reference_pid, server=server,
                proxy=proxy, cfg=cfg, ctx=ctx,
            )  # fmt: skip
            results["scenarios"] += [ref_row, row]
            console.print(
                f"  {name}: {row['requests_per_second']:,.0f} req/s "
                f"({row.get('throughput_ratio')}x nginx's "
                f"{ref_row['requests_per_second']:,.0f} req/s); CPU per request "
                f"{row['cpu_us_per_request']} us (Lumora + nginx) against "
                f"{ref_row['cpu_us_per_request']} us (nginx alone)"
            )
    except (ProbeFailed, RuntimeError, httpx.HTTPError) as exc:
        results["errors"].append(f"{impl} {name}: {type(exc).__name__}: {exc}")
        console.print(f"  [red]{name} failed[/red]: {type(exc).__name__}: {exc}")
    finally:
        proxy.stop()
        server.stop()
