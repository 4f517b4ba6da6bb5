"""The benchmark's data set, loaded through the management API.

Main project: ``channels`` x ``platforms``, ``updates`` publishes of history, each with a fresh
launch bundle per platform and ``assets_per_update`` assets taken as a sliding window over a
shared pool (consecutive releases share most files, as real ones do). Every file is uploaded
once through ``assets/missing`` + ``PUT``; the publishes run concurrently except the final
one of each channel, which run in order so the channel heads are known:

* ``production``: android's launch bundle is the 1 MB JavaScript asset of the asset scenario;
* ``preview``: rollout 50 % (the rollout check scenario).

History project: channel ``one`` holds 1 update and channel ``many`` holds ``history_updates``,
all with the same files, so the two checks differ only in history length. When publishing
that history through HTTP would take longer than ``history_http_budget``, the rest is
bulk-inserted in-process against the same database (the rows ``store.repository.publish``
writes; the server keeps running and picks them up through the delivery revision), and the
result says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.api import ManagementApi
from bench.config import BenchConfig
from bench.synth import SynthFile, asset_pool, js_bundle

RUNTIME_VERSION = "1"
SMALL_BUNDLE_BYTES = 8 * 1024
ROLLOUT_CHANNEL = "preview"
MANIFEST_CHANNEL = "production"
HISTORY_ONE = "one"
HISTORY_MANY = "many"
# Channels of range-declared updates (issue 21, target 4): devices send runtime versions no
# update declares exactly, so each is matched against the declared ranges.
RANGES_ONE = "ranges-one"
RANGES_MANY = "ranges-many"


def declared_range(n: int) -> str:
    """The runtime-version range update ``n`` of a ranges channel declares: distinct for
    every ``n`` (so a channel of 2,000 has 2,000 distinct ranges), each a narrow window."""
    return f">={n // 1000}.{n % 1000}.0 <{n // 1000}.{n % 1000}.5"


@dataclass
class LoadedData:
    """What the scenarios need to know about the loaded data."""

    project_id: str
    project_slug: str
    history_slug: str
    large_asset: SynthFile
    heads: dict[str, dict[str, str]] = field(default_factory=dict)  # channel -> platform -> id
    signed: bool = False
    timings: dict[str, Any] = field(default_factory=dict)


def _body(
    project: str,
    channel: str,
    platforms: dict[str, tuple[SynthFile, list[SynthFile]]],
    *,
    message: str,
    rollout: int = 100,
) -> dict[str, Any]:
    return {
        "project": project,
        "channel": channel,
        "runtimeVersion": RUNTIME_VERSION,
        "message": message,
        "rollout": rollout,
        "mandatory": False,
        "platforms": {
            platform: {
                "launchAsset": launch.ref(f"bundles/{platform}-{launch.sha256[:32]}.js"),
                "assets": [a.ref(f"assets/{a.sha256[:32]}") for a in assets],
            }
            for platform, (launch, assets) in platforms.items()
        },
        "extra": {"expoClient": {"name": "bench", "slug": "bench", "runtimeVersion": "1"}},
        "metadata": {},
    }


def _window(pool: list[SynthFile], start: int, size: int) -> list[SynthFile]:
    return [pool[(start + k) % len(pool)] for k in range(min(size, len(pool)))]


def _heads(result: dict[str, Any]) -> dict[str, str]:
    return {u["platform"]: u["id"] for u in result["updates"]}


async def load_main(api: ManagementApi, cfg: BenchConfig, slug: str) -> LoadedData:
    """Create the main project and publish its history."""
    started = time.perf_counter()
    project = await api.create_project(slug, "Benchmark app")
    pool = asset_pool(cfg.asset_pool, f"{slug}-pool")
    large = js_bundle(f"{slug}-large", cfg.large_asset_bytes)
    bodies: list[dict[str, Any]] = []
    files: list[SynthFile] = [*pool, large]
    final_of = {ch: cfg.updates - len(cfg.channels) + i for i, ch in enumerate(cfg.channels)}
    for i in range(cfg.updates):
        channel = cfg.channels[i % len(cfg.channels)]
        platforms: dict[str, tuple[SynthFile, list[SynthFile]]] = {}
        for platform in cfg.platforms:
            is_large = i == final_of.get(MANIFEST_CHANNEL) and platform == "android"
            launch = large if is_large else js_bundle(f"{slug}-{i}-{platform}", SMALL_BUNDLE_BYTES)
            files.append(launch)
            platforms[platform] = (launch, _window(pool, i, cfg.assets_per_update))
        final = i in final_of.values()
        channel = next((c for c, n in final_of.items() if n == i), channel)
        rollout = 50 if final and channel == ROLLOUT_CHANNEL else 100
        bodies.append(_body(slug, channel, platforms, message=f"release {i}", rollout=rollout))
    generated = time.perf_counter()
    uploaded = await api.upload(slug, files)
    uploaded_at = time.perf_counter()
    history, finals = bodies[: -len(cfg.channels)], bodies[-len(cfg.channels) :]
    await api.publish_many(history)
    data = LoadedData(project["id"], slug, "", large)
    for body in finals:
        data.heads[body["channel"]] = _heads(await api.publish(body))
    done = time.perf_counter()
    data.timings = {
        "generateSeconds": round(generated - started, 2),
        "uploadSeconds": round(uploaded_at - generated, 2),
        "uploadedBytes": uploaded,
        "uploadedFiles": len({f.sha256 for f in files}),
        "publishes": len(bodies),
        "publishSeconds": round(done - uploaded_at, 2),
        "publishesPerSecond": round(len(bodies) / max(done - uploaded_at, 1e-9), 1),
    }
    return data


HTTP_SAMPLE = 200


def insert_in_process(
    database_url: str,
    spec_body: dict[str, Any],
    count: int,
    runtime_version: Callable[[int], str] | None = None,
) -> None:
    """Insert ``count`` copies of the publish ``spec_body`` straight into the database.

    The rows are exactly what ``store.repository.publish`` writes (one group, one update, its
    asset rows), written in bulk with the store's models in one transaction, followed by
    ``bump_delivery_revision`` so running servers pick them up. ``runtime_version(n)``, when
    given, is the runtime version of copy ``n`` (else the body's).
    """
    from datetime import timedelta

    from sqlalchemy import insert

    from lumora_ota.store import repository
    from lumora_ota.store.db import bump_delivery_revision, create_db_engine, make_session_factory
    from lumora_ota.store.models import Update, UpdateAsset, UpdateGroup, new_id, utcnow

    engine = create_db_engine(database_url, pool_size=1)
    try:
        with make_session_factory(engine)() as session, session.begin():
            project = repository.find_project(session, spec_body["project"])
            if project is None:
                raise RuntimeError(f"project {spec_body['project']} not found in the database")
            channel = repository.ensure_channel(session, project.id, spec_body["channel"])
            files = [
                (platform, [p["launchAsset"], *p["assets"]])
                for platform, p in spec_body["platforms"].items()
            ]
            sizes = repository.blob_sizes(
                session, project.id, {f["sha256"] for _, refs in files for f in refs}
            )
            start = utcnow()
            groups, updates, assets = [], [], []
            for n in range(count):
                at = start + timedelta(microseconds=n)
                group_id = new_id()
                groups.append({"id": group_id, "project_id": project.id, "created_at": at,
                               "message": f"release {n} (bulk)"})  # fmt: skip
                for platform, refs in files:
                    update_id = new_id()
                    updates.append({
                        "id": update_id, "group_id": group_id, "project_id": project.id,
                        "channel_id": channel.id, "platform": platform,
                        "runtime_version": (
                            runtime_version(n) if runtime_version else spec_body["runtimeVersion"]
                        ),
                        "kind": repository.KIND_UPDATE, "message": f"release {n} (bulk)",
                        "created_at": at, "rollout": 100, "mandatory": False,
                        "status": repository.STATUS_ACTIVE, "metadata_json": {},
                        "extra_json": spec_body.get("extra", {}),
                    })  # fmt: skip
                    assets += [
                        {"update_id": update_id, "position": pos, "key": ref["key"],
                         "sha256": ref["sha256"], "size": sizes[ref["sha256"]],
                         "content_type": ref["contentType"],
                         "file_extension": ref["fileExtension"], "is_launch_asset": pos == 0}
                        for pos, ref in enumerate(refs)
                    ]  # fmt: skip
            session.execute(insert(UpdateGroup), groups)
            session.execute(insert(Update), updates)
            session.execute(insert(UpdateAsset), assets)
            bump_delivery_revision(session)
    finally:
        engine.dispose()


async def load_history(
    api: ManagementApi, cfg: BenchConfig, slug: str, database_url: str
) -> dict[str, Any]:
    """Create the history project: ``one`` with 1 update, ``many`` with ``history_updates``."""
    await api.create_project(slug, "Benchmark history")
    pool = asset_pool(cfg.assets_per_update, f"{slug}-pool")
    launch = js_bundle(f"{slug}-bundle", SMALL_BUNDLE_BYTES)
    await api.upload(slug, [*pool, launch])
    platforms = {"android": (launch, pool)}
    await api.publish(_body(slug, HISTORY_ONE, platforms, message="only"))
    started = time.perf_counter()
    sample = min(HTTP_SAMPLE, cfg.history_updates)
    await api.publish_many(
        [_body(slug, HISTORY_MANY, platforms, message=f"release {i}") for i in range(sample)]
    )
    sample_seconds = time.perf_counter() - started
    rate = sample / max(sample_seconds, 1e-9)
    remaining = cfg.history_updates - sample
    projected = remaining / rate
    result: dict[str, Any] = {
        "historyUpdates": cfg.history_updates,
        "historyHttpPublishesPerSecond": round(rate, 1),
        "historyHttpProjectedSeconds": round(cfg.history_updates / rate, 1),
    }
    if projected <= cfg.history_http_budget:
        await api.publish_many(
            [
                _body(slug, HISTORY_MANY, platforms, message=f"release {i}")
                for i in range(sample, cfg.history_updates)
            ]
        )
        result["historyMethod"] = f"HTTP publish, {api.concurrency} concurrent"
    else:
        body = _body(slug, HISTORY_MANY, platforms, message="")
        await asyncio.to_thread(insert_in_process, database_url, body, remaining)
        result["historyMethod"] = (
            f"{sample} by HTTP publish, {remaining} bulk-inserted in-process with the store's "
            "models in one transaction (HTTP would have taken "
            f"{cfg.history_updates / rate:.0f} s)"
        )
    ranges_started = time.perf_counter()
    one = _body(slug, RANGES_ONE, platforms, message="range")
    one["runtimeVersion"] = declared_range(0)
    await api.publish(one)
    many = _body(slug, RANGES_MANY, platforms, message="")
    await asyncio.to_thread(
        insert_in_process, database_url, many, cfg.history_ranges, declared_range
    )
    result["historyRanges"] = cfg.history_ranges
    result["historyRangesSeconds"] = round(time.perf_counter() - ranges_started, 2)
    result["historySeconds"] = round(time.perf_counter() - started, 2)
    return result
