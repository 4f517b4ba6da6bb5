"""Load generation with wrk: a Lua script per scenario (method, headers, body, random device
ids) whose ``done`` hook prints the summary and latency percentiles as one JSON line."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

RESULT_MARKER = "BENCH-RESULT "

# Each wrk thread has its own Lua state; ``setup`` hands each a distinct seed so threads draw
# different device ids.
LUA_TEMPLATE = """\
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter * 7919 + os.time())
end

wrk.method = {method}
wrk.headers = {{}}
{headers}
wrk.body = {body}

{request}

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests":%d,"durationUs":%d,"bytes":%d,"connectErrors":%d,"readErrors":%d,'
    .. '"writeErrors":%d,"statusErrors":%d,"timeouts":%d,"p50Us":%d,"p90Us":%d,"p99Us":%d,'
    .. '"maxUs":%d,"meanUs":%.1f}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""

# Replaces ``__DEVICE__`` in the body with a fresh UUID-shaped id per request, and
# ``__RUNTIME__`` (when present) with a random ``MAJOR.MINOR.PATCH`` runtime version no update
# declares exactly (majors from 100 up; the range channels declare majors below 10).
RANDOM_DEVICE_REQUEST = """\
local parts = {}
local function uuid()
  return string.format("%04x%04x-%04x-4%03x-%04x-%04x%04x%04x",
    math.random(0, 65535), math.random(0, 65535), math.random(0, 65535),
    math.random(0, 4095), math.random(32768, 49151), math.random(0, 65535),
    math.random(0, 65535), math.random(0, 65535))
end
local function runtime()
  return string.format("%d.%d.%d", math.random(100, 999), math.random(0, 999),
    math.random(0, 999))
end
function init(args)
  math.randomseed(seed)
  local rest = wrk.body
  while true do
    local d = string.find(rest, "__DEVICE__", 1, true)
    local r = string.find(rest, "__RUNTIME__", 1, true)
    local at, kind, len
    if d and (not r or d < r) then at, kind, len = d, uuid, 10
    elseif r then at, kind, len = r, runtime, 11
    else break end
    table.insert(parts, string.sub(rest, 1, at - 1))
    table.insert(parts, kind)
    rest = string.sub(rest, at + len)
  end
  table.insert(parts, rest)
end

function request()
  local out = {}
  for i, part in ipairs(parts) do
    if type(part) == "function" then out[i] = part() else out[i] = part end
  end
  return wrk.format(nil, nil, nil, table.concat(out))
end
"""

# The statistics flood of the security issue (``bench/stats_flood.py``): each request names
# a new random device (``eas-client-id``) and ``failed_ids`` random made-up update ids in
# ``expo-recent-failed-update-ids``.
FLOOD_REQUEST = """\
local failed_count = {failed_ids}
local function uuid()
  return string.format("%04x%04x-%04x-4%03x-%04x-%04x%04x%04x",
    math.random(0, 65535), math.random(0, 65535), math.random(0, 65535),
    math.random(0, 4095), math.random(32768, 49151), math.random(0, 65535),
    math.random(0, 65535), math.random(0, 65535))
end
function init(args)
  math.randomseed(seed)
end

function request()
  local ids = {{}}
  for i = 1, failed_count do ids[i] = '"' .. uuid() .. '"' end
  wrk.headers["eas-client-id"] = uuid()
  wrk.headers["expo-recent-failed-update-ids"] = table.concat(ids, ", ")
  return wrk.format()
end
"""

DEVICE_PLACEHOLDER = "__DEVICE__"
RUNTIME_PLACEHOLDER = "__RUNTIME__"


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal here


@dataclass(frozen=True)
class LoadSpec:
    """One wrk target: where, how, and whether each request gets a random device id."""

    url: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    random_device: bool = False
    # > 0: the statistics flood (a new device and this many made-up failed ids per request).
    flood_failed_ids: int = 0

    def lua(self) -> str:
        """The wrk script for this target."""
        headers = "\n".join(
            f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in self.headers.items()
        )
        if self.random_device and (self.body is None or DEVICE_PLACEHOLDER not in self.body):
            raise ValueError("random_device needs a body with the __DEVICE__ placeholder")
        return LUA_TEMPLATE.format(
            method=_lua_string(self.method),
            headers=headers,
            body=_lua_string(self.body) if self.body is not None else "nil",
            request=(
                RANDOM_DEVICE_REQUEST
                if self.random_device
                else FLOOD_REQUEST.format(failed_ids=self.flood_failed_ids)
                if self.flood_failed_ids
                else ""
            ),
            marker=RESULT_MARKER,
        )


@dataclass(frozen=True)
class LoadResult:
    """What wrk measured."""

    requests: int
    seconds: float
    bytes: int
    errors: int
    status_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def requests_per_second(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def megabytes_per_second(self) -> float:
        """Response bytes (headers included) per second, in MB (10^6)."""
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0


def wrk_executable() -> str | None:
    """The wrk binary, if installed."""
    return shutil.which("wrk")


def run_wrk(
    spec: LoadSpec,
    *,
    duration: float,
    connections: int,
    threads: int,
    workdir: Path,
    name: str,
) -> LoadResult:
    """Run wrk against ``spec`` and parse its JSON summary line."""
    binary = wrk_executable()
    if binary is None:
        raise RuntimeError("wrk is not installed")
    script = workdir / f"{name}.lua"
    script.write_text(spec.lua())
    seconds = max(1, round(duration))
    proc = subprocess.run(
        [
            binary,
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            spec.url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    (workdir / f"{name}.wrk.txt").write_text(proc.stdout + proc.stderr)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARKER)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    raw = json.loads(line[len(RESULT_MARKER) :])
    return LoadResult(
        requests=raw["requests"],
        seconds=raw["durationUs"] / 1e6,
        bytes=raw["bytes"],
        errors=raw["connectErrors"] + raw["readErrors"] + raw["writeErrors"] + raw["timeouts"],
        status_errors=raw["statusErrors"],
        p50_ms=raw["p50Us"] / 1000,
        p90_ms=raw["p90Us"] / 1000,
        p99_ms=raw["p99Us"] / 1000,
        max_ms=raw["maxUs"] / 1000,
    )
