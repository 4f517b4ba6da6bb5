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

import time
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

ACCEL_SCENARIO = "asset_1mb_br_accel"
REFERENCE = "nginx_asset_br"


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


def measure_accel(
    impl: str,
    cfg: BenchConfig,
    ctx: dict[str, Any],
    results: dict[str, Any],
    console: Console,
) -> None:
    """Measure ``asset_1mb_br_accel`` against ``nginx_asset_br`` for one implementation;
    rows (and errors) go into ``results``."""
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
    proxy = NginxProxy(root, server.port, workdir / "data" / "blobs", access_log=False)
    try:
        proxy.start()
        scenario = accel_scenario(proxy.url, data)
        (reference,) = [s for s in nginx_scenarios(ctx["nginx"].url, signed=data.signed)
                        if s.name == REFERENCE]  # fmt: skip
        _wait_probe(scenario)
        half = replace(cfg, duration=max(1.0, cfg.duration / 2))
        parts: dict[str, list[ScenarioResult]] = {REFERENCE: [], ACCEL_SCENARIO: []}
        proxy_cpu = 0.0
        for turn in (1, 2):
            parts[REFERENCE].append(
                measure(reference, server="nginx", pid=ctx["nginx"].pid, cfg=half,
                        workdir=workdir, tag=f"-accel-{impl}-{turn}")
            )  # fmt: skip
            with ResourceSampler(proxy.pid) as proxy_use:
                parts[ACCEL_SCENARIO].append(
                    measure(scenario, server=impl, pid=server.pid, cfg=half, workdir=workdir,
                            profile=ctx["profile"], tag=f"-{turn}")
                )  # fmt: skip
            proxy_cpu += proxy_use.result.cpu_seconds
        ref, accel = combine(parts[REFERENCE]), combine(parts[ACCEL_SCENARIO])
        ref_row = ref.to_json()
        ref_row["paired_with"] = f"{impl} {ACCEL_SCENARIO}"
        # CPU per request does not depend on how busy the shared machine is: the whole chain
        # (nginx in front + Lumora) against nginx sending the file alone.
        ref_row["cpu_us_per_request"] = round(ref.cpu_seconds / max(ref.requests, 1) * 1e6, 1)
        row = accel.to_json()
        row["proxy_cpu_seconds"] = round(proxy_cpu, 3)
        row["cpu_us_per_request"] = round(
            (accel.cpu_seconds + proxy_cpu) / max(accel.requests, 1) * 1e6, 1
        )
        if ref.requests_per_second and ref.megabytes_per_second:
            row["nginx_ratio"] = round(accel.requests_per_second / ref.requests_per_second, 3)
            row["throughput_ratio"] = round(
                accel.megabytes_per_second / ref.megabytes_per_second, 3
            )
        results["scenarios"] += [ref_row, row]
        console.print(
            f"  {ACCEL_SCENARIO}: {accel.requests_per_second:,.0f} req/s "
            f"({row.get('throughput_ratio')}x nginx's {ref.requests_per_second:,.0f} req/s); "
            f"CPU per request {row['cpu_us_per_request']} us (Lumora + nginx) against "
            f"{ref_row['cpu_us_per_request']} us (nginx alone)"
        )
    except (ProbeFailed, RuntimeError, httpx.HTTPError) as exc:
        results["errors"].append(f"{impl} {ACCEL_SCENARIO}: {type(exc).__name__}: {exc}")
        console.print(f"  [red]{ACCEL_SCENARIO} failed[/red]: {type(exc).__name__}: {exc}")
    finally:
        proxy.stop()
        server.stop()
