"""What a device's runtime version costs the delivery cache on a miss (security issue 15,
item 14): matching a channel history of ``--updates`` updates one by one (the old way) against
the ``RuntimeIndex`` (distinct declared versions), for known and random runtime versions.

Run::

    .venv/bin/python -m bench.runtime_lookup --updates 10000 --lookups 2000
    .venv/bin/python -m bench.runtime_lookup --updates 2000 --ranges   # 2,000 distinct ranges
"""

from __future__ import annotations

import argparse
import json
import random as random_module
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bench.dataset import declared_range
from lumora_ota.domain.model import UpdateRecord
from lumora_ota.domain.runtime import runtime_matches
from lumora_ota.server.device.cache import RuntimeIndex

DECLARED = ("1.0.0", "1.1.0", "2.0.0", "1.2.x", "^2.1.0")


def history(n: int, *, ranges: bool = False) -> tuple[UpdateRecord, ...]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return tuple(
        UpdateRecord(
            id=str(uuid.uuid4()),
            group_id="g",
            project_id="p",
            channel="production",
            platform="ios",
            runtime_version=declared_range(i) if ranges else DECLARED[i % len(DECLARED)],
            created_at=start - timedelta(minutes=i),
        )
        for i in range(n)
    )


def per_second(lookup: Callable[[str], object], versions: list[str]) -> float:
    started = time.perf_counter()
    for version in versions:
        lookup(version)
    return round(len(versions) / (time.perf_counter() - started), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument(
        "--ranges",
        action="store_true",
        help="every update declares its own range (bench.dataset.declared_range); random "
        "versions are semantic versions across those ranges",
    )
    args = parser.parse_args(argv)
    everything = history(args.updates, ranges=args.ranges)
    started = time.perf_counter()
    index = RuntimeIndex(everything)
    build_seconds = time.perf_counter() - started
    rng = random_module.Random(7)
    if args.ranges:
        known = [everything[i % len(everything)].runtime_version for i in range(args.lookups)]
        span = max(1, args.updates // 1000)
        random = [
            f"{rng.randrange(span + 1)}.{rng.randrange(1000)}.{rng.randrange(10)}"
            for _ in range(args.lookups)
        ]
    else:
        known = [DECLARED[i % 3] for i in range(args.lookups)]
        random = [f"rv-{uuid.uuid4().hex[:8]}" for _ in range(args.lookups)]

    def scan(version: str) -> list[int]:
        return [i for i, u in enumerate(everything) if runtime_matches(u.runtime_version, version)]

    result = {
        "updates": args.updates,
        "ranges": args.ranges,
        "indexBuildSeconds": round(build_seconds, 3),
        "lookupsPerSecond": {
            "scanKnown": per_second(scan, known[: max(args.lookups // 20, 10)]),
            "scanRandom": per_second(scan, random[: max(args.lookups // 20, 10)]),
            "indexKnown": per_second(index.positions, known),
            "indexRandom": per_second(index.positions, random),
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
