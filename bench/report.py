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
HISTORY_COST_RATIO = 1.1
REPUBLISH_SECONDS = 1.0


@dataclass(frozen=True)
class TargetCheck:
    """One target on one server: what was asked, what was measured, whether it passed."""

    server: str
    scenario: str
    target: str
    measured: str
    passed: bool

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "server": self.server,
            "scenario": self.scenario,
            "target": self.target,
            "measured": self.measured,
            "passed": self.passed,
        }


def _by_name(rows: list[dict[str, Any]], server: str) -> dict[str, dict[str, Any]]:
    return {r["scenario"]: r for r in rows if r["server"] == server}


def judge(results: dict[str, Any]) -> list[TargetCheck]:
    """Every target of the issue, per server implementation measured."""
    checks: list[TargetCheck] = []
    rows: list[dict[str, Any]] = results["scenarios"]
    for server in results["servers"]:
        named = _by_name(rows, server)
        manifest = named.get("expo_manifest_signed")
        if manifest and manifest.get("nginx_ratio") is not None:
            ratio = manifest["nginx_ratio"]
            checks.append(
                TargetCheck(
                    server,
                    "expo_manifest_signed",
                    ">= 0.5x nginx req/s",
                    f"{ratio:.2f}x",
                    ratio >= MANIFEST_NGINX_RATIO,
                )
            )
            checks.append(
                TargetCheck(
                    server,
                    "expo_manifest_signed",
                    "p99 < 10 ms",
                    f"{manifest['p99_ms']:.1f} ms",
                    manifest["p99_ms"] < MANIFEST_P99_MS,
                )
            )
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
        checks += _issue21_device_targets(server, named)
    return checks  # fmt: skip


# --- Issue 21, targets 1 and 5 (the device path, scaling over workers) ----------------------
WORKERS_SCALING_RATIO = 1.6


def _issue21_device_targets(server: str, named: dict[str, dict[str, Any]]) -> list[TargetCheck]:
    """``expo_no_update`` against nginx (as the signed manifest above) and two workers
    against one on the signed manifest."""
    checks: list[TargetCheck] = []
    no_update = named.get("expo_no_update")
    if no_update and no_update.get("nginx_ratio") is not None:
        ratio = no_update["nginx_ratio"]
        checks.append(
            TargetCheck(
                server,
                "expo_no_update",
                ">= 0.5x nginx req/s",
                f"{ratio:.2f}x",
                ratio >= MANIFEST_NGINX_RATIO,
            )
        )
        checks.append(
            TargetCheck(
                server,
                "expo_no_update",
                "p99 < 10 ms",
                f"{no_update['p99_ms']:.1f} ms",
                no_update["p99_ms"] < MANIFEST_P99_MS,
            )
        )
    two = named.get("expo_manifest_signed_2_workers")
    if two and two.get("workers_ratio") is not None:
        ratio = two["workers_ratio"]
        checks.append(
            TargetCheck(
                server,
                "expo_manifest_signed_2_workers",
                ">= 1.6x one worker req/s",
                f"{ratio:.2f}x",
                ratio >= WORKERS_SCALING_RATIO,
            )
        )
    return checks  # fmt: skip


def _targets_text(checks: list[TargetCheck], server: str, scenario: str) -> str:
    return "; ".join(
        f"{c.target}: {'PASS' if c.passed else 'MISS'} ({c.measured})"
        for c in checks
        if c.server == server and c.scenario == scenario and "RSS" not in c.target
    )


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
    missed = [c for c in checks if not c.passed and "RSS" not in c.target]
    rss_missed = [c for c in checks if not c.passed and "RSS" in c.target]
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
