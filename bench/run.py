"""Run the Lumora OTA benchmark end to end on loopback (``make bench``).

Starts ``lumora serve`` (one worker) for each server implementation, loads the data set
through the management API, enables manifest signing, starts nginx serving the exact signed
manifest bytes and the brotli asset as the machine's reference, runs every wrk scenario, times
publishing, and prints a table with the issue's targets. JSON goes to
``bench/results/latest.json``.

    python bench/run.py             # full run (about 15 minutes)
    python bench/run.py --quick     # tiny numbers, for the smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import brotli
import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(REPO_ROOT))

from rich.console import Console  # noqa: E402

from bench.accel import measure_accel  # noqa: E402
from bench.api import ApiError, ManagementApi  # noqa: E402
from bench.config import FULL, QUICK, SERVER_IMPLS, BenchConfig  # noqa: E402
from bench.dataset import LoadedData, load_history, load_main  # noqa: E402
from bench.delta import delta_sizes, fixtures_dir  # noqa: E402
from bench.processes import LumoraServer, NginxReference, nginx_executable  # noqa: E402
from bench.publishing import run_publishing  # noqa: E402
from bench.report import faster_server, judge, markdown, print_table  # noqa: E402
from bench.scenarios import (  # noqa: E402
    ALTERNATED,
    KEYID,
    MEMORY_SCENARIOS,
    SCALING_WORKERS,
    WORKERS_SCENARIO,
    ProbeFailed,
    Scenario,
    ScenarioResult,
    combine,
    device_scenarios,
    manifest_headers,
    measure,
    nginx_scenarios,
    probe,
    scaling_scenario,
)
from bench.wrk import wrk_executable  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
MAIN_SLUG = "bench-app"
HISTORY_SLUG = "bench-history"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny numbers (smoke test)")
    parser.add_argument("--duration", type=float, help="seconds per wrk scenario")
    parser.add_argument("--connections", type=int, help="wrk connections")
    parser.add_argument("--threads", type=int, help="wrk threads")
    parser.add_argument("--servers", help=f"comma-separated, of {','.join(SERVER_IMPLS)}")
    parser.add_argument("--updates", type=int, help="publishes of history in the main project")
    parser.add_argument("--history-updates", type=int, help="updates in the long channel")
    parser.add_argument(
        "--history-ranges", type=int, help="range-declared updates (unknown-runtime channel)"
    )
    parser.add_argument(
        "--memory-duration", type=float, help="seconds of the memory scenarios (checks, flood)"
    )
    parser.add_argument(
        "--history-http-budget",
        type=float,
        help="seconds of HTTP publishing allowed for the long history before bulk insertion",
    )
    parser.add_argument("--database-url", help="default: SQLite in the data dir")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    parser.add_argument("--workdir", type=Path, help="keep data, logs and wrk output here")
    parser.add_argument(
        "--scenarios",
        help="comma-separated device scenario names to run (default: all); publishing is "
        "skipped when given",
    )
    parser.add_argument(
        "--profile", action="store_true", help="sample the server with py-spy in each scenario"
    )
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> BenchConfig:
    """The base config with command-line overrides."""
    cfg = QUICK if args.quick else FULL
    overrides: dict[str, Any] = {}
    for name in (
        "duration",
        "memory_duration",
        "history_ranges",
        "connections",
        "threads",
        "updates",
        "history_updates",
        "history_http_budget",
    ):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.servers:
        servers = tuple(s.strip() for s in args.servers.split(",") if s.strip())
        unknown = set(servers) - set(SERVER_IMPLS)
        if unknown:
            raise SystemExit(f"unknown server implementation(s): {', '.join(sorted(unknown))}")
        overrides["servers"] = servers
    return replace(cfg, **overrides)


async def load_data(base_url: str, key: str, cfg: BenchConfig, database_url: str) -> LoadedData:
    """Main project, history project, manifest signing."""
    from lumora_ota.signing import generate_signing_identity

    api = ManagementApi(base_url, key, cfg.load_concurrency, cfg.upload_concurrency)
    try:
        data = await load_main(api, cfg, MAIN_SLUG)
        data.history_slug = HISTORY_SLUG
        data.timings.update(await load_history(api, cfg, HISTORY_SLUG, database_url))
        private_pem, certificate_pem = generate_signing_identity("Lumora bench")
        try:
            await api.enable_signing(
                MAIN_SLUG, KEYID, private_pem.decode(), certificate_pem.decode()
            )
            data.signed = True
        except ApiError as exc:  # measured unsigned, and reported as an error
            data.timings["signingError"] = str(exc)[:300]
        if api.server_errors:
            data.timings["serverErrorsRetried"] = api.server_errors
        return data
    finally:
        await api.aclose()


def wait_until_served(base_url: str, data: LoadedData, timeout: float = 300.0) -> None:
    """Poll until every scenario gets its answer: the delivery cache has the new heads and
    the background compression has made the large asset's brotli variant. A probe may wait
    as long as the deadline allows, so a slow first load (the 10,000-update channel) is not
    started again by a retry. Scenarios still failing at the deadline are reported when
    measured."""
    deadline = time.monotonic() + timeout
    for scenario in device_scenarios(base_url, data):
        while (left := deadline - time.monotonic()) > 0:
            try:
                probe(scenario, timeout=left)
                break
            except (ProbeFailed, httpx.HTTPError, ValueError, KeyError):
                time.sleep(0.2)


def wait_until_quiet(database_url: str, quiet: float, timeout: float) -> dict[str, Any]:
    """Wait until neither the delivery revision nor the patch revision has moved for
    ``quiet`` seconds: background work after publishing (compressed variants, delta patches)
    still runs until then, so figures taken before are not the steady state. Reports how
    many times each moved (delivery bumps empty every server's delivery cache; patch bumps
    only reload the patch index)."""
    from lumora_ota.store.db import create_db_engine, read_revisions

    engine = create_db_engine(database_url, pool_size=1)
    started = time.monotonic()
    bumps = patch_bumps = 0
    try:
        last = read_revisions(engine)
        last_change = started
        while True:
            now = time.monotonic()
            settled = now - last_change >= quiet
            if settled or now - started >= timeout:
                return {
                    "settled": settled,
                    "seconds": round(now - started, 1),
                    "bumps": bumps,
                    "patchBumps": patch_bumps,
                }
            time.sleep(0.5)
            revisions = read_revisions(engine)
            if revisions != last:
                bumps += revisions[0] - last[0]
                patch_bumps += revisions[1] - last[1]
                last, last_change = revisions, time.monotonic()
    finally:
        engine.dispose()


def start_nginx(root: Path, base_url: str, data: LoadedData) -> NginxReference:
    """nginx serving the exact signed manifest answer and the asset's brotli bytes."""
    url = f"{base_url}/api/v1/expo/{data.project_slug}/manifest"
    resp = httpx.get(url, headers=manifest_headers(signed=data.signed), timeout=30)
    resp.raise_for_status()
    large = data.large_asset
    asset_url = f"{base_url}/api/v1/assets/{large.sha256}{large.file_extension}"
    with httpx.stream("GET", asset_url, headers={"accept-encoding": "br"}, timeout=30) as r:
        raw = b"".join(r.iter_raw()) if r.headers.get("content-encoding") == "br" else b""
    if not raw:  # the server sends no br variant: compress it the way it should have
        raw = brotli.compress(large.data, quality=11)
    return NginxReference(root, resp.content, dict(resp.headers), raw).start()


def _row(result: ScenarioResult, paired_with: str | None = None) -> dict[str, Any]:
    row = result.to_json()
    if paired_with:
        row["paired_with"] = paired_with
    return row


def run_server(
    impl: str,
    cfg: BenchConfig,
    ctx: dict[str, Any],
    results: dict[str, Any],
    console: Console,
) -> None:
    """Everything measured against one server implementation."""
    workdir: Path = ctx["workdir"]
    server = LumoraServer(
        workdir / "data", ctx["admin_key"], impl, database_url=ctx["database_url_flag"]
    )
    console.print(f"[bold]{impl}[/bold]: starting {' '.join(server.command())}")
    server.start()
    results["commands"][impl] = " ".join(server.command())
    try:
        if ctx.get("data") is None:
            console.print("loading the data set through the management API ...")
            ctx["data"] = asyncio.run(
                load_data(server.url, ctx["admin_key"], cfg, ctx["database_url"])
            )
            results["dataset"] = ctx["data"].timings
            if ctx["data"].timings.get("serverErrorsRetried"):
                results["errors"].append(
                    "the server answered 5xx while loading (retried): "
                    + ", ".join(ctx["data"].timings["serverErrorsRetried"][:5])
                )
            if not ctx["data"].signed:
                results["errors"].append(
                    f"signing could not be enabled, manifests measured UNSIGNED: "
                    f"{ctx['data'].timings.get('signingError')}"
                )
            console.print(f"loaded: {json.dumps(ctx['data'].timings)}")
        data: LoadedData = ctx["data"]
        console.print("waiting for background work (variants, patches) to settle ...")
        settle = wait_until_quiet(ctx["database_url"], cfg.quiet_seconds, cfg.settle_timeout)
        results["settle"][impl] = settle
        if not settle["settled"]:
            results["errors"].append(
                f"{impl}: the delivery revision still moved after {settle['seconds']} s "
                f"({settle['bumps']} bumps); measured during background work"
            )
        console.print(f"settle: {settle}")
        wait_until_served(server.url, data)
        if ctx.get("nginx") is None:
            ctx["nginx"] = start_nginx(workdir / "nginx", server.url, data)
        nginx: NginxReference = ctx["nginx"]
        references: dict[str, ScenarioResult] = {}
        for scenario in nginx_scenarios(nginx.url, signed=data.signed):
            ref = measure(scenario, server="nginx", pid=nginx.pid, cfg=cfg, workdir=workdir)
            references[scenario.name] = ref
            results["scenarios"].append(_row(ref, paired_with=impl))
            console.print(f"  {scenario.name}: {ref.requests_per_second:,.0f} req/s")
        scenarios = [s for s in device_scenarios(server.url, data)
                     if ctx["only"] is None or s.name in ctx["only"]]  # fmt: skip
        measured = measure_device_scenarios(scenarios, impl, server.pid, cfg, ctx, results, console)
        for scenario in scenarios:
            result = measured.get(scenario.name)
            if result is None:
                continue
            row = _row(result)
            ref_row = references.get(scenario.reference or "")
            if ref_row and ref_row.requests_per_second:
                row["nginx_ratio"] = round(
                    result.requests_per_second / ref_row.requests_per_second, 3
                )
                if scenario.name.startswith("asset"):
                    row["throughput_ratio"] = round(
                        result.megabytes_per_second / ref_row.megabytes_per_second, 3
                    )
            results["scenarios"].append(row)
            console.print(
                f"  {scenario.name}: {result.requests_per_second:,.0f} req/s, "
                f"p99 {result.p99_ms:.1f} ms, RSS {result.rss_mb:.0f} MB"
            )
        if ctx["only"] is None:  # a filtered run measures the named scenarios only
            try:
                results["publishing"][impl] = publish_twice(server, ctx, cfg, impl)
            except Exception as exc:
                results["publishing"][impl] = {"error": str(exc)[:500]}
                results["errors"].append(f"{impl} publishing: {exc}")
        server.stop()
        if ctx["only"] is None or WORKERS_SCENARIO in ctx["only"]:
            one = measured.get("expo_manifest_signed")
            measure_scaling(impl, cfg, ctx, results, console, references, one)
    finally:
        server.stop()
    measure_accel(impl, cfg, ctx, results, console)  # the asset behind nginx (issue 21)


def measure_scaling(
    impl: str,
    cfg: BenchConfig,
    ctx: dict[str, Any],
    results: dict[str, Any],
    console: Console,
    references: dict[str, ScenarioResult],
    one_worker: ScenarioResult | None,
) -> None:
    """The signed manifest on a server with ``SCALING_WORKERS`` workers (issue 21 target
    5), once the one-worker server has stopped: its ratio to one worker and to nginx."""
    workdir: Path = ctx["workdir"]
    server = LumoraServer(
        workdir / "data",
        ctx["admin_key"],
        impl,
        database_url=ctx["database_url_flag"],
        workers=SCALING_WORKERS,
    )
    console.print(f"[bold]{impl}[/bold]: starting {' '.join(server.command())}")
    try:
        server.start()
        scenario = scaling_scenario(server.url, ctx["data"])
        for _ in range(2 * SCALING_WORKERS):  # each worker loads its delivery cache
            probe(scenario, timeout=60)
        result = measure(
            scenario,
            server=impl,
            pid=server.pid,
            cfg=cfg,
            workdir=workdir,
            profile=ctx["profile"],
        )
    except (ProbeFailed, RuntimeError, httpx.HTTPError) as exc:
        results["errors"].append(f"{impl} {WORKERS_SCENARIO}: {type(exc).__name__}: {exc}")
        return
    finally:
        server.stop()
    row = _row(result)
    ref = references.get(scenario.reference or "")
    if ref and ref.requests_per_second:
        row["nginx_ratio"] = round(result.requests_per_second / ref.requests_per_second, 3)
    if one_worker and one_worker.requests_per_second:
        row["workers_ratio"] = round(result.requests_per_second / one_worker.requests_per_second, 3)
    results["scenarios"].append(row)
    console.print(
        f"  {WORKERS_SCENARIO}: {result.requests_per_second:,.0f} req/s, "
        f"p99 {result.p99_ms:.1f} ms, x{row.get('workers_ratio')} of one worker"
    )


def measure_device_scenarios(
    scenarios: list[Scenario],
    impl: str,
    pid: int,
    cfg: BenchConfig,
    ctx: dict[str, Any],
    results: dict[str, Any],
    console: Console,
) -> dict[str, ScenarioResult]:
    """Measure each scenario; the ``ALTERNATED`` pair in turns, half the duration each."""
    parts: dict[str, list[ScenarioResult]] = {}
    half = replace(cfg, duration=max(1.0, cfg.duration / 2))
    memory = replace(cfg, duration=cfg.memory_duration)
    plan = [
        (s, memory if s.name in MEMORY_SCENARIOS else cfg, "")
        for s in scenarios
        if s.name not in ALTERNATED and s.name != MEMORY_SCENARIOS[-1]
    ]
    alternated = [s for s in scenarios if s.name in ALTERNATED]
    for first in range(0, len(alternated), 2):
        pair = alternated[first : first + 2]
        plan += [(s, half, f"-{turn}") for turn in (1, 2) for s in pair]
    # The flood last: the memory it leaves is measured after it (``rss_after_mb``).
    plan += [(s, memory, "") for s in scenarios if s.name == MEMORY_SCENARIOS[-1]]
    failed: set[str] = set()
    for scenario, run_cfg, suffix in plan:
        if scenario.name in failed:
            continue
        try:
            result = measure(
                scenario,
                server=impl,
                pid=pid,
                cfg=run_cfg,
                workdir=ctx["workdir"],
                profile=ctx["profile"],
                tag=suffix,
            )
        except (ProbeFailed, RuntimeError, httpx.HTTPError) as exc:
            failed.add(scenario.name)
            results["errors"].append(f"{impl} {scenario.name}: {type(exc).__name__}: {exc}")
            console.print(f"  [red]{scenario.name} failed[/red]: {type(exc).__name__}: {exc}")
            continue
        parts.setdefault(scenario.name, []).append(result)
    return {name: combine(runs) for name, runs in parts.items() if name not in failed}


def publish_twice(
    server: LumoraServer, ctx: dict[str, Any], cfg: BenchConfig, impl: str
) -> dict[str, Any]:
    """The 20 MB publish scenario in a project of its own (fresh files per implementation)."""
    slug = f"bench-publish-{impl}"

    async def create() -> None:
        api = ManagementApi(server.url, ctx["admin_key"], 1)
        try:
            await api.create_project(slug, f"Publish benchmark ({impl})")
        finally:
            await api.aclose()

    asyncio.run(create())
    return run_publishing(
        ctx["workdir"], server.url, ctx["admin_key"], slug, cfg.publish_files, cfg.publish_bytes
    )


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (1 when any scenario failed)."""
    args = parse_args(argv)
    cfg = config_from(args)
    # A SIGTERM (timeout, CI cancel) unwinds like Ctrl-C, so the servers and nginx we
    # started are stopped by the ``finally`` blocks instead of being left running.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    console = Console()
    if not console.is_terminal:
        console = Console(width=180)
    missing = [name for name, found in (("wrk", wrk_executable()), ("nginx", nginx_executable()))
               if not found]  # fmt: skip
    if missing:
        console.print(f"[red]missing {', '.join(missing)}[/red]: run `make system-deps`")
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lumora-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    ctx: dict[str, Any] = {
        "workdir": workdir,
        "admin_key": "lum_bench_" + secrets.token_urlsafe(24),
        "database_url_flag": args.database_url,
        "profile": args.profile,
        "only": set(args.scenarios.split(",")) if args.scenarios else None,
        "database_url": args.database_url or f"sqlite:///{(data_dir / 'lumora.db').resolve()}",
    }
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cores": os.cpu_count(),
        "loadAverageAtStart": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join(["python bench/run.py", *(sys.argv[1:] if argv is None else argv)]),
        "config": cfg.to_json(),
        "servers": list(cfg.servers),
        "commands": {},
        "dataset": {},
        "scenarios": [],
        "publishing": {},
        "settle": {},
        "errors": [],
    }
    try:
        for impl in cfg.servers:
            try:
                run_server(impl, cfg, ctx, results, console)
            except Exception as exc:
                results["errors"].append(f"{impl}: {type(exc).__name__}: {exc}"[:2000])
                (workdir / f"{impl}-error.txt").write_text(traceback.format_exc())
                console.print(f"[red]{impl} failed[/red]: {exc}")
            if ctx.get("data") is None:
                break  # the data set did not load: nothing to measure on the others
    finally:
        if ctx.get("nginx") is not None:
            ctx["nginx"].stop()
    results["loadAverageAtEnd"] = [round(x, 2) for x in os.getloadavg()]
    results["delta"] = delta_sizes(fixtures_dir(REPO_ROOT))
    results["fasterServer"] = faster_server(results)
    checks = judge(results)
    results["targets"] = [c.to_json() for c in checks]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results, checks, console)
    if results["delta"]:
        d = results["delta"]
        console.print(
            f"device download, {d['bundle']}: raw {d['rawBytes']:,} B, gzip {d['gzipBytes']:,} B,"
            f" brotli {d['brotliBytes']:,} B, patch {d['patchBytes']:,} B ({d['patchNote']})"
        )
    if args.markdown:
        args.markdown.write_text(markdown(results, checks) + "\n")
    console.print(f"results: {args.output}")
    if args.workdir is None and not results["errors"]:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    elif results["errors"]:
        console.print(f"logs and wrk output kept in {workdir}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
