"""The device-facing load scenarios: what each requests, how its answer is checked once
before the load (a wrong answer fast is not a result), and how it is measured."""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.config import BenchConfig
from bench.dataset import (
    HISTORY_MANY,
    HISTORY_ONE,
    MANIFEST_CHANNEL,
    RANGES_MANY,
    RANGES_ONE,
    ROLLOUT_CHANNEL,
    RUNTIME_VERSION,
    LoadedData,
)
from bench.processes import ResourceSampler
from bench.profiling import start_profile, summarize
from bench.wrk import DEVICE_PLACEHOLDER, RUNTIME_PLACEHOLDER, LoadSpec, run_wrk

KEYID = "main"
EXPECT_SIGNATURE = f'sig, keyid="{KEYID}", alg="rsa-v1_5-sha256"'
MANIFEST_PLATFORM = "android"


class ProbeFailed(RuntimeError):
    """The endpoint did not give the answer the scenario is about."""


@dataclass
class ScenarioResult:
    """One measured scenario on one server."""

    server: str
    scenario: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    megabytes_per_second: float
    rss_mb: float
    main_rss_mb: float
    workers_rss_mb: float
    cpu_seconds: float
    requests: int
    errors: int
    status_errors: int
    reference: str | None = None
    nginx_ratio: float | None = None
    # Tree RSS a few seconds after the load stopped (statistics flushed): what the load left.
    rss_after_mb: float | None = None
    profile: dict[str, list[tuple[str, float]]] | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view, rounded for reading."""
        out = asdict(self)
        if out["profile"] is None:
            del out["profile"]
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 3)
        return out


@dataclass(frozen=True)
class Scenario:
    """A named load with the check its answer must pass and its nginx reference."""

    name: str
    spec: LoadSpec
    probe: Callable[[httpx.Response], None]
    reference: str | None


def manifest_headers(
    current_update_id: str | None = None, *, signed: bool = True
) -> dict[str, str]:
    """Headers of a (signed) Expo Updates v1 request from an android device on production."""
    headers = {
        "accept": "multipart/mixed",
        "expo-platform": MANIFEST_PLATFORM,
        "expo-runtime-version": RUNTIME_VERSION,
        "expo-protocol-version": "1",
        "expo-channel-name": MANIFEST_CHANNEL,
    }
    if signed:
        headers["expo-expect-signature"] = EXPECT_SIGNATURE
    if current_update_id:
        headers["expo-current-update-id"] = current_update_id
    return headers


def multipart_parts(resp: httpx.Response) -> dict[str, tuple[dict[str, str], bytes]]:
    """The parts of a multipart/mixed answer by name: (headers, body)."""
    content_type = resp.headers.get("content-type", "")
    if not content_type.startswith("multipart/mixed"):
        raise ProbeFailed(f"expected multipart/mixed, got {content_type!r}")
    raw = f"content-type: {content_type}\r\n\r\n".encode() + resp.content
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    parts: dict[str, tuple[dict[str, str], bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        parts[str(name)] = (
            {k.lower(): str(v) for k, v in part.items()},
            payload if isinstance(payload, bytes) else b"",
        )
    return parts


def _expect_status(resp: httpx.Response, status: int = 200) -> None:
    if resp.status_code != status:
        raise ProbeFailed(f"HTTP {resp.status_code}: {resp.text[:300]}")


def served_manifest(resp: httpx.Response, *, signed: bool = True) -> dict[str, Any]:
    """The manifest part of a manifest answer (checks that it is signed when ``signed``)."""
    _expect_status(resp)
    parts = multipart_parts(resp)
    if "manifest" not in parts:
        raise ProbeFailed(f"no manifest part; parts: {sorted(parts)}")
    headers, body = parts["manifest"]
    if signed and "expo-signature" not in headers:
        raise ProbeFailed("manifest part carries no expo-signature")
    manifest: dict[str, Any] = json.loads(body)
    return manifest


def _probe_no_update(resp: httpx.Response) -> None:
    _expect_status(resp)
    parts = multipart_parts(resp)
    if "directive" not in parts:
        raise ProbeFailed(f"no directive part; parts: {sorted(parts)}")
    directive = json.loads(parts["directive"][1])
    if directive.get("type") != "noUpdateAvailable":
        raise ProbeFailed(f"directive is {directive}")


def _probe_check(resp: httpx.Response) -> None:
    _expect_status(resp)
    body = resp.json()
    if "updateAvailable" not in body:
        raise ProbeFailed(f"no updateAvailable in {str(body)[:200]}")


def _probe_update_available(resp: httpx.Response) -> None:
    _probe_check(resp)
    if resp.json()["updateAvailable"] is not True:
        raise ProbeFailed("expected an update to be available")


def _asset_probe(expected_sha256: str) -> Callable[[httpx.Response], None]:
    def probe(resp: httpx.Response) -> None:
        _expect_status(resp)
        if resp.headers.get("content-encoding") != "br":
            raise ProbeFailed(f"content-encoding is {resp.headers.get('content-encoding')!r}")
        # httpx has already undone the content-encoding (brotli is installed).
        if hashlib.sha256(resp.content).hexdigest() != expected_sha256:
            raise ProbeFailed("brotli body does not decode to the asset")

    return probe


def check_body(
    project: str, channel: str, platform: str = "android", runtime: str = RUNTIME_VERSION
) -> str:
    """A Lumora check request body with the random-device placeholder."""
    return json.dumps(
        {
            "projectId": project,
            "channel": channel,
            "platform": platform,
            "runtimeVersion": runtime,
            "deviceId": DEVICE_PLACEHOLDER,
        }
    )


def device_scenarios(base: str, data: LoadedData) -> list[Scenario]:
    """The server scenarios, in the order they run."""
    served_id = data.heads[MANIFEST_CHANNEL][MANIFEST_PLATFORM]
    manifest_url = f"{base}/api/v1/expo/{data.project_slug}/manifest"
    check_url = f"{base}/api/v1/updates/check"
    json_headers = {"content-type": "application/json"}
    large = data.large_asset
    return [
        Scenario(
            "expo_manifest_signed",
            LoadSpec(manifest_url, headers=manifest_headers(signed=data.signed)),
            _manifest_probe(served_id, signed=data.signed),
            "nginx_manifest",
        ),
        Scenario(
            "expo_no_update",
            LoadSpec(manifest_url, headers=manifest_headers(served_id, signed=data.signed)),
            _probe_no_update,
            "nginx_manifest",
        ),
        Scenario(
            "check_rollout_50",
            LoadSpec(
                check_url,
                method="POST",
                headers=json_headers,
                body=check_body(data.project_slug, ROLLOUT_CHANNEL),
                random_device=True,
            ),
            _probe_check,
            "nginx_manifest",
        ),
        Scenario(
            "asset_1mb_br",
            LoadSpec(
                f"{base}/api/v1/assets/{large.sha256}{large.file_extension}",
                headers={"accept-encoding": "br"},
            ),
            _asset_probe(large.sha256),
            "nginx_asset_br",
        ),
        # These two are measured alternately (see ``ALTERNATED``).
        Scenario(
            "check_history_1",
            LoadSpec(
                check_url,
                method="POST",
                headers=json_headers,
                body=check_body(data.history_slug, HISTORY_ONE),
                random_device=True,
            ),
            _probe_update_available,
            "nginx_manifest",
        ),
        Scenario(
            "check_history_10k",
            LoadSpec(
                check_url,
                method="POST",
                headers=json_headers,
                body=check_body(data.history_slug, HISTORY_MANY),
                random_device=True,
            ),
            _probe_update_available,
            "nginx_manifest",
        ),
        # Target 4: runtime versions no update declares exactly, against 1 and against
        # ``history_ranges`` distinct declared ranges (alternated too).
        Scenario(
            "check_unknown_runtime_1",
            LoadSpec(
                check_url,
                method="POST",
                headers=json_headers,
                body=check_body(data.history_slug, RANGES_ONE, runtime=RUNTIME_PLACEHOLDER),
                random_device=True,
            ),
            _probe_check,
            "nginx_manifest",
        ),
        Scenario(
            "check_unknown_runtime_many",
            LoadSpec(
                check_url,
                method="POST",
                headers=json_headers,
                body=check_body(data.history_slug, RANGES_MANY, runtime=RUNTIME_PLACEHOLDER),
                random_device=True,
            ),
            _probe_check,
            "nginx_manifest",
        ),
        # Target 3: the statistics flood of the security issue (a new device and 50 made-up
        # failed update ids per manifest request); measured last, for the memory it leaves.
        Scenario(
            FLOOD_SCENARIO,
            LoadSpec(
                manifest_url,
                headers=manifest_headers(signed=data.signed),
                flood_failed_ids=FLOOD_FAILED_IDS,
            ),
            _manifest_probe(served_id, signed=data.signed),
            "nginx_manifest",
        ),
    ]


FLOOD_SCENARIO = "stats_flood"
SETTLE_AFTER_LOAD_SECONDS = 2.0
FLOOD_FAILED_IDS = 50
# Scenarios that run ``memory_duration`` (60 s in the full run): the RSS target is "under 60 s
# of random-device checks" and "after a 60 s flood".
MEMORY_SCENARIOS = ("check_rollout_50", FLOOD_SCENARIO)


def _manifest_probe(served_id: str, *, signed: bool) -> Callable[[httpx.Response], None]:
    def probe(resp: httpx.Response) -> None:
        served = served_manifest(resp, signed=signed)["id"]
        if served != served_id:
            raise ProbeFailed(f"manifest id is {served}, not the channel head {served_id}")

    return probe


# Compared with each other, so run in turns (A B A B, half the duration each) rather than one
# after the other: drift on a shared machine then falls on both alike.
ALTERNATED = (
    "check_history_1",
    "check_history_10k",
    "check_unknown_runtime_1",
    "check_unknown_runtime_many",
)


def nginx_scenarios(base: str, *, signed: bool) -> list[Scenario]:
    """The two static references (sent the same request headers as the server gets)."""
    return [
        Scenario(
            "nginx_manifest",
            LoadSpec(f"{base}/manifest", headers=manifest_headers(signed=signed)),
            _expect_status,
            None,
        ),
        Scenario(
            "nginx_asset_br",
            LoadSpec(f"{base}/asset.js", headers={"accept-encoding": "br"}),
            _expect_status,
            None,
        ),
    ]


def probe(scenario: Scenario, timeout: float = 30.0) -> None:
    """Send the scenario's request once and check the answer."""
    body = scenario.spec.body
    if body is not None and scenario.spec.random_device:
        body = body.replace(DEVICE_PLACEHOLDER, "probe-device-0001")
        body = body.replace(RUNTIME_PLACEHOLDER, "123.4.5")
    resp = httpx.request(
        scenario.spec.method,
        scenario.spec.url,
        headers=scenario.spec.headers,
        content=body,
        timeout=timeout,
    )
    scenario.probe(resp)


def measure(
    scenario: Scenario,
    *,
    server: str,
    pid: int,
    cfg: BenchConfig,
    workdir: Path,
    profile: bool = False,
    tag: str = "",
) -> ScenarioResult:
    """Probe, then load with wrk while sampling the server's memory and CPU (and its stacks
    with py-spy when ``profile``)."""
    probe(scenario)
    profile_path = workdir / f"{server}-{scenario.name}{tag}.pyspy.txt"
    profiler = start_profile(pid, profile_path, cfg.duration) if profile else None
    with ResourceSampler(pid) as sampler:
        load = run_wrk(
            scenario.spec,
            duration=cfg.duration,
            connections=cfg.connections,
            threads=cfg.threads,
            workdir=workdir,
            name=f"{server}-{scenario.name}{tag}",
        )
    if profiler is not None:
        profiler.wait(timeout=cfg.duration + 60)
    rss_after = None
    if scenario.name in MEMORY_SCENARIOS:
        time.sleep(SETTLE_AFTER_LOAD_SECONDS)  # the statistics flush (every second) has run
        rss_after = sampler.rss()[0] / 2**20
    result = ScenarioResult(
        server=server,
        scenario=scenario.name,
        requests_per_second=load.requests_per_second,
        p50_ms=load.p50_ms,
        p99_ms=load.p99_ms,
        max_ms=load.max_ms,
        megabytes_per_second=load.megabytes_per_second,
        rss_mb=sampler.result.peak_rss_bytes / 2**20,
        main_rss_mb=sampler.result.peak_main_rss_bytes / 2**20,
        workers_rss_mb=sampler.result.peak_workers_rss_bytes / 2**20,
        cpu_seconds=sampler.result.cpu_seconds,
        requests=load.requests,
        errors=load.errors,
        status_errors=load.status_errors,
        reference=scenario.reference,
        rss_after_mb=rss_after,
    )
    if profiler is not None and profile_path.exists():
        result.profile = summarize(profile_path)
    return result


def combine(parts: list[ScenarioResult]) -> ScenarioResult:
    """One result from several runs of the same scenario: rates over the summed time, the
    mean p50, the worst p99 and max, the peak RSS, the summed CPU."""
    first = parts[0]
    seconds = [p.requests / p.requests_per_second if p.requests_per_second else 0.0 for p in parts]
    requests = sum(p.requests for p in parts)
    total = sum(seconds) or 1.0
    return ScenarioResult(
        server=first.server,
        scenario=first.scenario,
        requests_per_second=requests / total,
        p50_ms=sum(p.p50_ms for p in parts) / len(parts),
        p99_ms=max(p.p99_ms for p in parts),
        max_ms=max(p.max_ms for p in parts),
        megabytes_per_second=sum(
            p.megabytes_per_second * s for p, s in zip(parts, seconds, strict=True)
        )
        / total,
        rss_mb=max(p.rss_mb for p in parts),
        main_rss_mb=max(p.main_rss_mb for p in parts),
        workers_rss_mb=max(p.workers_rss_mb for p in parts),
        cpu_seconds=sum(p.cpu_seconds for p in parts),
        requests=requests,
        errors=sum(p.errors for p in parts),
        status_errors=sum(p.status_errors for p in parts),
        reference=first.reference,
        rss_after_mb=parts[-1].rss_after_mb,
        profile=first.profile,
    )


# --- Issue 21, target 5 (scaling over workers) ---------------------------------------------
# The signed manifest again, on a server started with ``--workers 2`` (after the one-worker
# server has stopped); its ``workers_ratio`` is its req/s over the one-worker figure.
WORKERS_SCENARIO = "expo_manifest_signed_2_workers"
SCALING_WORKERS = 2


def scaling_scenario(base: str, data: LoadedData) -> Scenario:
    """``expo_manifest_signed`` under the scaling scenario's name, against ``base``."""
    manifest = device_scenarios(base, data)[0]
    return Scenario(WORKERS_SCENARIO, manifest.spec, manifest.probe, manifest.reference)
