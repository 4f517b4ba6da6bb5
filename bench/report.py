"""Targets from the performance issue, judged against the measured figures, and the table
(Rich in a terminal, Markdown for docs/BENCHMARKS.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

RSS_LIMIT_MB = 200.0
MANIFEST_NGINX_RATIO = 0.5
MANIFEST_P99_MS = 10.0
ASSET_NGINX_RATIO = 0.8
ACCEL_NGINX_RATIO = 0.9  # issue 21 target 2: behind nginx, X-Accel-Redirect
HISTORY_COST_RATIO = 1.1
WORKERS_SCALING = 1.6
REPUBLISH_SECONDS = 1.0
NOT_MEASURED = "not measured"

# Scenario names the targets of issue 21 are judged on (absent ones print "not measured").
MANIFEST_SCENARIOS = ("expo_manifest_signed", "expo_no_update")
ACCEL_SCENARIO = "asset_1mb_br_accel"  # bench/accel.py
CHECKS_MEMORY_SCENARIO = "check_rollout_50"
FLOOD_SCENARIO = "stats_flood"
UNKNOWN_RUNTIME = ("check_unknown_runtime_1", "check_unknown_runtime_many")
WORKERS_SCENARIO = ("expo_manifest_signed_2_workers", "expo_manifest_signed")


@dataclass(frozen=True)
class TargetCheck:
    """One target on one server: what was asked, what was measured, whether it passed."""

    server: str
    scenario: str
    target: str
    measured: str
    passed: bool | None  # None: not measured in this run
    issue_target: str = ""  # "1".."5": the numbered target of issue 21 this judges

    @property
    def verdict(self) -> str:
        """PASS, MISS or "not measured"."""
        if self.passed is None:
            return NOT_MEASURED
        return "PASS" if self.passed else "MISS"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "server": self.server,
            "scenario": self.scenario,
            "target": self.target,
            "measured": self.measured,
            "passed": self.passed,
            "issueTarget": self.issue_target,
            "verdict": self.verdict,
        }


def _by_name(rows: list[dict[str, Any]], server: str) -> dict[str, dict[str, Any]]:
    return {r["scenario"]: r for r in rows if r["server"] == server}


def judge(results: dict[str, Any]) -> list[TargetCheck]:
    """Every target of the issue, per server implementation measured: the five numbered
    targets of issue 21 first (each printed, "not measured" when its scenario did not run),
    then per-scenario RSS and the publishing targets."""
    checks: list[TargetCheck] = []
    rows: list[dict[str, Any]] = results["scenarios"]
    for server in results["servers"]:
        named = _by_name(rows, server)
        checks += issue_targets(named, rows)
        asset = named.get("asset_1mb_br")
        if asset and asset.get("throughput_ratio") is not None:
            ratio = asset["throughput_ratio"]
            checks.append(
                TargetCheck(
                    server,
                    "asset_1mb_br",
                    ">= 0.8x nginx throughput",
                    f"{ratio:.2f}x",
                    ratio >= ASSET_NGINX_RATIO,
                )
            )
        one, many = named.get("check_history_1"), named.get("check_history_10k")
        if one and many and many["requests_per_second"] > 0:
            cost = one["requests_per_second"] / many["requests_per_second"]
            checks.append(
                TargetCheck(
                    server,
                    "check_history_10k",
                    "cost <= 1.1x of 1 update",
                    f"{cost:.2f}x",
                    cost <= HISTORY_COST_RATIO,
                )
            )
        for name, row in named.items():
            if name == "expo_manifest_signed_2_workers":
                continue  # two workers: the 200 MB is per worker (issue 21, target 3)
            checks.append(
                TargetCheck(
                    server,
                    name,
                    "server RSS < 200 MB",
                    f"{row['rss_mb']:.0f} MB",
                    row["rss_mb"] < RSS_LIMIT_MB,
                )
            )
        publish = results.get("publishing", {}).get(server)
        if publish and "again" in publish:
            again = publish["again"]
            checks.append(
                TargetCheck(
                    server,
                    "publish_again",
                    "uploads 0 bytes",
                    f"{again['uploadedBytes']} B",
                    again["uploadedBytes"] == 0,
                )
            )
            checks.append(
                TargetCheck(
                    server,
                    "publish_again",
                    "completes < 1 s",
                    f"{again['seconds']:.2f} s",
                    again["seconds"] < REPUBLISH_SECONDS,
                )
            )
    return checks  # fmt: skip


def _rate_ratio(top: dict[str, Any] | None, bottom: dict[str, Any] | None) -> float | None:
    if not top or not bottom or not bottom.get("requests_per_second"):
        return None
    return float(top["requests_per_second"]) / float(bottom["requests_per_second"])


def _nginx_ratio(row: dict[str, Any] | None, key: str = "nginx_ratio") -> float | None:
    value = row.get(key) if row else None
    return float(value) if value is not None else None


def _rss_text(row: dict[str, Any], value: float) -> str:
    return f"{value:.0f} MB (tree; worker(s) {row.get('workers_rss_mb', 0):.0f} MB)"


def issue_targets(
    named: dict[str, dict[str, Any]], rows: list[dict[str, Any]]
) -> list[TargetCheck]:
    """The five targets of issue 21 for one server's scenarios (``named``), in order, each
    judged or marked not measured; ``rows`` are every server's (a scenario measured under
    another server name, e.g. a two-worker run, is found there)."""
    server = next(iter(named.values()))["server"] if named else ""
    out: list[TargetCheck] = []

    def add(
        number: str, scenario: str, target: str, value: float | None, text: str, ok: bool | None
    ) -> None:
        out.append(
            TargetCheck(
                server,
                scenario,
                target,
                text if value is not None else NOT_MEASURED,
                ok if value is not None else None,
                number,
            )
        )

    for name in MANIFEST_SCENARIOS:
        row = named.get(name)
        ratio = _nginx_ratio(row)
        add(
            "1",
            name,
            ">= 0.5x nginx req/s",
            ratio,
            f"{ratio or 0:.2f}x",
            ratio is not None and ratio >= MANIFEST_NGINX_RATIO,
        )
        p99 = float(row["p99_ms"]) if row else None
        add(
            "1",
            name,
            "p99 < 10 ms",
            p99,
            f"{p99 or 0:.1f} ms",
            p99 is not None and p99 < MANIFEST_P99_MS,
        )
    accel = named.get(ACCEL_SCENARIO)
    ratio = _nginx_ratio(accel, "throughput_ratio") or _nginx_ratio(accel)
    add(
        "2",
        ACCEL_SCENARIO,
        ">= 0.9x nginx serving the file directly",
        ratio,
        f"{ratio or 0:.2f}x",
        ratio is not None and ratio >= ACCEL_NGINX_RATIO,
    )
    checks_row = named.get(CHECKS_MEMORY_SCENARIO)
    peak = float(checks_row["rss_mb"]) if checks_row else None
    add(
        "3",
        CHECKS_MEMORY_SCENARIO,
        "RSS < 200 MB under random-device checks",
        peak,
        _rss_text(checks_row or {}, peak or 0),
        peak is not None and peak < RSS_LIMIT_MB,
    )
    flood = named.get(FLOOD_SCENARIO)
    after = flood.get("rss_after_mb") if flood else None
    add(
        "3",
        FLOOD_SCENARIO,
        "RSS < 200 MB after the statistics flood",
        after,
        _rss_text(flood or {}, after or 0) + f", peak {(flood or {}).get('rss_mb', 0):.0f} MB",
        after is not None and after < RSS_LIMIT_MB,
    )
    cost = _rate_ratio(named.get(UNKNOWN_RUNTIME[0]), named.get(UNKNOWN_RUNTIME[1]))
    add(
        "4",
        UNKNOWN_RUNTIME[1],
        "unknown-runtime cost <= 1.1x of 1 range",
        cost,
        f"{cost or 0:.2f}x",
        cost is not None and cost <= HISTORY_COST_RATIO,
    )
    two = named.get(WORKERS_SCENARIO[0]) or next(
        (r for r in rows if r["scenario"] == WORKERS_SCENARIO[0]), None
    )
    scaling = _rate_ratio(two, named.get(WORKERS_SCENARIO[1]))
    add(
        "5",
        WORKERS_SCENARIO[0],
        ">= 1.6x one worker on the manifest",
        scaling,
        f"{scaling or 0:.2f}x",
        scaling is not None and scaling >= WORKERS_SCALING,
    )
    return out  # fmt: skip


def _targets_text(checks: list[TargetCheck], server: str, scenario: str) -> str:
    return "; ".join(
        f"{c.target}: {c.verdict} ({c.measured})"
        for c in checks
        if c.server == server and c.scenario == scenario and not _per_scenario_rss(c)
    )


def _per_scenario_rss(check: TargetCheck) -> bool:
    return not check.issue_target and "RSS" in check.target


TARGET_HEADERS = ["target", "server", "scenario", "asked", "measured", "verdict"]


def target_rows(checks: list[TargetCheck]) -> list[list[str]]:
    """One row per numbered target of issue 21 per server, in target order."""
    numbered = sorted((c for c in checks if c.issue_target), key=lambda c: c.issue_target)
    return [[c.issue_target, c.server, c.scenario, c.target, c.measured, c.verdict]
            for c in numbered]  # fmt: skip


def _ratio(row: dict[str, Any]) -> str:
    value = row.get("throughput_ratio") or row.get("nginx_ratio")
    return f"{value:.2f}" if value is not None else ""


def table_rows(results: dict[str, Any], checks: list[TargetCheck]) -> list[list[str]]:
    """Rows of the summary table: one per scenario per server, then publishing."""
    out: list[list[str]] = []
    for row in results["scenarios"]:
        rss_ok = row["rss_mb"] < RSS_LIMIT_MB or row["server"] == "nginx"
        rss_ok = rss_ok or row["scenario"] == "expo_manifest_signed_2_workers"  # per worker
        out.append([
            row["server"],
            row["scenario"] + (f" (for {row['paired_with']})" if row.get("paired_with") else ""),
            f"{row['requests_per_second']:,.0f}",
            f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}",
            f"{row['rss_mb']:.0f}" + ("" if rss_ok else " MISS"), _ratio(row),
            _targets_text(checks, row["server"], row["scenario"]),
        ])  # fmt: skip
    for server, publish in results.get("publishing", {}).items():
        if "error" in publish:
            out.append([server, "publish", "", "", "", "", "", f"error: {publish['error']}"])
            continue
        for phase in ("first", "again"):
            item = publish[phase]
            out.append([
                server, f"publish_{phase} ({publish['files']} files, "
                f"{publish['bytes'] / 1e6:.0f} MB)", "", "", "", "", "",
                f"{item['seconds']:.2f} s, uploaded {item['uploadedBytes']} B"
                + (f"; {_targets_text(checks, server, 'publish_again')}"
                   if phase == "again" else ""),
            ])  # fmt: skip
    return out


HEADERS = ["server", "scenario", "req/s", "p50 ms", "p99 ms", "RSS MB", "x nginx", "targets"]


def print_table(results: dict[str, Any], checks: list[TargetCheck], console: Console) -> None:
    """The summary on the terminal."""
    table = Table(title=f"Lumora OTA benchmark ({results['date']}, {results['cores']} cores)")
    for header in HEADERS:
        table.add_column(header, overflow="fold")
    for row in table_rows(results, checks):
        table.add_row(*row)
    console.print(table)
    targets = Table(title="Issue 21 targets")
    for header in TARGET_HEADERS:
        targets.add_column(header, overflow="fold")
    for row in target_rows(checks):
        targets.add_row(*row)
    console.print(targets)
    for error in results.get("errors", []):
        console.print(f"[red]error[/red] {error}")


def markdown(results: dict[str, Any], checks: list[TargetCheck]) -> str:
    """The run as Markdown: when, where, how, the table, misses, data set, delta sizes."""
    cfg = results["config"]
    lines = [
        f"Measured {results['date']} on {results['cores']} cores "
        f"(load average {results.get('loadAverageAtStart')} at start, "
        f"{results.get('loadAverageAtEnd')} at end), command `{results['command']}`.",
        f"wrk: {cfg['connections']} connections, {cfg['threads']} thread(s), "
        f"{cfg['duration']:.0f} s per scenario; 1 server worker, 1 nginx worker. "
        f"Server commands: " + "; ".join(f"`{c}`" for c in results.get("commands", {}).values()),
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |"
              for row in table_rows(results, checks)]  # fmt: skip
    lines += [
        "",
        "Issue 21 targets:",
        "",
        "| " + " | ".join(TARGET_HEADERS) + " |",
        "|" + "---|" * len(TARGET_HEADERS),
    ]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |"
              for row in target_rows(checks)]  # fmt: skip
    missed = [c for c in checks if c.passed is False and not _per_scenario_rss(c)]
    rss_missed = [c for c in checks if c.passed is False and _per_scenario_rss(c)]
    if missed or rss_missed:
        lines += ["", "Targets missed:", ""]
        lines += [f"- {c.server} {c.scenario}: {c.target}, measured {c.measured}" for c in missed]
        for server in dict.fromkeys(c.server for c in rss_missed):
            mine = [c for c in rss_missed if c.server == server]
            peak = max(mine, key=lambda c: float(c.measured.split()[0]))
            lines.append(
                f"- {server}: server RSS < 200 MB missed in {len(mine)} scenario(s), "
                f"peak {peak.measured} ({peak.scenario})"
            )
    if results.get("dataset"):
        lines += ["", f"Data set loading: `{results['dataset']}`"]
    if results.get("settle"):
        lines += ["", f"Background work settling before measuring: `{results['settle']}`"]
    delta = results.get("delta")
    if delta:
        lines += [
            "",
            f"Device download of {delta['bundle']} bundle: raw {delta['rawBytes']:,} B, "
            f"gzip {delta['gzipBytes']:,} B, brotli {delta['brotliBytes']:,} B, "
            f"patch {delta['patchBytes']:,} B ({delta['patchNote']}).",
        ]
    if results.get("fasterServer"):
        lines += ["", f"Faster server implementation in this run: {results['fasterServer']}."]
    for error in results.get("errors", []):
        lines.append(f"- error: {error[:300]}")
    return "\n".join(lines)


def faster_server(results: dict[str, Any]) -> str | None:
    """The implementation with the higher geometric-mean req/s over the device scenarios."""
    scores: dict[str, float] = {}
    for server in results["servers"]:
        rates = [r["requests_per_second"] for r in results["scenarios"]
                 if r["server"] == server and r["requests_per_second"] > 0]  # fmt: skip
        if rates:
            scores[server] = math.exp(sum(math.log(x) for x in rates) / len(rates))
    return max(scores, key=lambda s: scores[s]) if scores else None
