"""The delivery cache: selection-only candidate lists, full records on demand, one load per key
however many requests miss at once; recording delta patches leaves it alone."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from delta_helpers import launch_path, updates_by_platform, wait_for_patch
from device_helpers import expo_headers, in_process_app
from harness import create_project, make_export, publish_export
from lumora_ota.domain.model import UpdateRecord
from lumora_ota.domain.runtime import runtime_matches
from lumora_ota.domain.selection import SelectionRequest
from lumora_ota.server.device.cache import MAX_RUNTIME_LISTS, DeliveryCache, RuntimeIndex
from lumora_ota.server.device.delivery import select_for_device
from lumora_ota.store.db import (
    bump_delivery_revision,
    bump_patch_revision,
    make_session_factory,
    read_revisions,
)


@pytest.fixture
def published(tmp_path: Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(AppContext, the published ios update) of an in-process app whose poller stays quiet."""
    with in_process_app(tmp_path, cache_poll_interval=3600, stats_flush_interval=3600) as pair:
        client, ctx = pair
        create_project(client, "cached")
        answer, _ = publish_export(client, "cached", make_export(tmp_path / "export", seed="c"))
        yield ctx, next(u for u in answer["updates"] if u["platform"] == "ios")


def update_queries(engine: Any) -> tuple[list[str], Any]:
    """Record the statements reading updates or their assets (not the background workers')."""
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        lowered = statement.lower()
        is_read = "from updates" in lowered or "from update_assets" in lowered
        if is_read and threading.current_thread().name.startswith("AnyIO"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", on_execute)
    return seen, on_execute


def test_concurrent_misses_share_one_load(published: tuple[Any, dict[str, Any]]) -> None:
    ctx, ios = published
    cache: DeliveryCache = ctx.delivery
    request = SelectionRequest(channel="production", platform="ios", runtime_version="1")

    async def many_devices() -> list[Any]:
        pid = await cache.project_id("cached")
        assert pid is not None
        return await asyncio.gather(*(select_for_device(cache, pid, request) for _ in range(20)))

    cache.invalidate()
    seen, listener = update_queries(ctx.engine)
    try:
        selections = asyncio.run(many_devices())
    finally:
        event.remove(ctx.engine, "before_cursor_execute", listener)
    assert {s.update.id for s in selections} == {ios["id"]}
    # One candidate-list load, and one full-record load of the served update (the update,
    # then its assets): three statements, not three per request.
    assert len(seen) == 3
    assert len([q for q in seen if "from update_assets" in q.lower()]) == 1


def test_candidates_carry_no_assets_but_the_served_update_does(
    published: tuple[Any, dict[str, Any]],
) -> None:
    ctx, ios = published
    cache: DeliveryCache = ctx.delivery
    request = SelectionRequest(channel="production", platform="ios", runtime_version="1")

    async def look() -> tuple[Any, Any]:
        pid = await cache.project_id("cached")
        assert pid is not None
        candidates = await cache.candidates(pid, "production", "ios", "1")
        return candidates, await select_for_device(cache, pid, request)

    candidates, selection = asyncio.run(look())
    assert [u.id for u in candidates] == [ios["id"]]
    assert candidates[0].launch_asset is None and candidates[0].assets == ()
    served = selection.update
    assert served is not None and served.id == ios["id"]
    assert served.launch_asset is not None
    assert served.launch_asset.sha256 == ios["launchAsset"]["sha256"]
    assert len(served.assets) == len(ios["assets"])


@pytest.mark.parametrize("store_engine", ["sqlite"], indirect=True)
def test_local_commits_tell_the_two_revisions_apart(store_engine: Any) -> None:
    cache = DeliveryCache(store_engine, make_session_factory(store_engine), poll_interval=3600)
    cache.watch_local_commits()
    sessions = make_session_factory(store_engine)

    def bump(*bumps: Callable[[Session], None], commit: bool = True) -> tuple[int, int]:
        before = (cache.invalidations, cache.patch_changes)
        with sessions() as session:
            for fn in bumps:
                fn(session)
            session.commit() if commit else session.rollback()
        return cache.invalidations - before[0], cache.patch_changes - before[1]

    # Each counts at the commit and again when the connection goes back to the pool.
    assert bump(bump_delivery_revision) == (2, 0)
    assert bump(bump_patch_revision) == (0, 2)
    assert bump(bump_delivery_revision, bump_patch_revision) == (2, 2)
    assert bump(bump_delivery_revision, bump_patch_revision, commit=False) == (0, 0)
    assert bump(lambda s: s.execute(text("SELECT revision FROM delivery_state"))) == (0, 0)


def _launch_asset(client: Any, update: dict[str, Any], current: str) -> Any:
    """GET an update's launch asset the way expo-updates 55+ asks for a patch."""
    headers = {
        "a-im": "bsdiff",
        "expo-current-update-id": current,
        "expo-requested-update-id": update["id"],
        "expo-platform": update["platform"],
        "expo-runtime-version": update["runtimeVersion"],
        "accept-encoding": "br, gzip",
    }
    return client.get(launch_path(update), headers=headers)


def _wait_for_226(client: Any, update: dict[str, Any], current: str) -> Any:
    deadline = time.monotonic() + 30
    while (resp := _launch_asset(client, update, current)).status_code != 226:
        assert resp.status_code == 200, resp.text
        assert time.monotonic() < deadline, "the new patch was never served"
        time.sleep(0.05)
    return resp


def test_new_patches_are_served_without_emptying_the_delivery_cache(tmp_path: Path) -> None:
    """Recording patches bumps the patch revision only: this process's patch index learns of
    the new patch at once (local commit, the poller is quiet), while the delivery cache keeps
    its generation — memoized manifest bodies included — and the delivery revision stays."""
    settings = {"cache_poll_interval": 3600, "stats_flush_interval": 3600}
    # generated bundles are tiny: let every patch count as useful
    with in_process_app(tmp_path, patch_max_ratio=1000.0, **settings) as (client, ctx):
        cache: DeliveryCache = ctx.delivery
        create_project(client, "patched")

        def publish(seed: str, channel: str) -> dict[str, Any]:
            root = make_export(tmp_path / seed, seed=seed, n_assets=1)
            answer, _ = publish_export(client, "patched", root, channel=channel)
            return updates_by_platform(answer)["android"]

        store_build = publish("store-build", "internal")  # another stream: never a base
        old = publish("old", "production")
        new = publish("new", "production")
        wait_for_patch(client, new["id"], old["id"])
        assert _wait_for_226(client, new, old["id"]).headers["im"] == "bsdiff"

        manifest_headers = expo_headers("android", accept="application/expo+json")
        manifest_url = "/api/v1/expo/patched/manifest"
        first = client.get(manifest_url, headers=manifest_headers)
        assert first.status_code == 200 and first.json()["id"] == new["id"]
        invalidations, patch_changes = cache.invalidations, cache.patch_changes
        index_loads = ctx.patches.loads
        delivery_revision, patch_revision = read_revisions(ctx.engine)

        # A store build embedding the internal bundle: the worker computes a new patch
        # (new content pair) from it toward the production head.
        embedded_id = "store-build-1"
        registered = client.post(
            "/api/v1/projects/patched/embedded",
            json={
                "platform": "android",
                "runtimeVersion": "1",
                "embeddedUpdateId": embedded_id,
                "sha256": store_build["launchAsset"]["sha256"],
            },
        )
        assert registered.status_code == 201, registered.text
        wait_for_patch(client, new["id"], embedded_id)
        resp = _wait_for_226(client, new, embedded_id)
        assert resp.headers["expo-base-update-id"] == embedded_id
        assert _launch_asset(client, new, store_build["id"]).status_code == 226  # same pair

        assert read_revisions(ctx.engine) == (delivery_revision, patch_revision + 1)
        assert cache.invalidations == invalidations
        assert cache.patch_changes > patch_changes
        assert ctx.patches.loads > index_loads
        # The manifest is still memoized: served again without reading any update.
        seen, listener = update_queries(ctx.engine)
        try:
            again = client.get(manifest_url, headers=manifest_headers)
        finally:
            event.remove(ctx.engine, "before_cursor_execute", listener)
        assert again.status_code == 200 and again.content == first.content
        assert seen == []
        assert cache.invalidations == invalidations


DECLARED = st.sampled_from(["1", "1.0.0", "1.2.0", "2.0.0", "1.2.x", "^1.0.0", ">=2.0.0", "abc"])
REQUESTED = st.one_of(DECLARED, st.sampled_from(["1.2.3", "2.5", "0.9", "x"]), st.text(max_size=8))


@given(st.lists(DECLARED, max_size=40), REQUESTED)
def test_runtime_index_finds_what_a_full_scan_finds(declared: list[str], requested: str) -> None:
    """Issue 15, item 14: the index answers from the distinct declared versions, and must
    agree with matching every update of the history one by one."""
    history = tuple(
        UpdateRecord(
            id=f"u{i}",
            group_id="g",
            project_id="p",
            channel="production",
            platform="ios",
            runtime_version=version,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        for i, version in enumerate(declared)
    )
    expected = [i for i, u in enumerate(history) if runtime_matches(u.runtime_version, requested)]
    assert list(RuntimeIndex(history).positions(requested)) == expected


def test_unknown_runtime_versions_are_remembered_apart(
    published: tuple[Any, dict[str, Any]],
) -> None:
    """Random runtime versions are answered from a bounded negative cache, and do not evict
    the candidate list real devices use (every later request for it is still a hit)."""
    ctx, _ios = published
    cache: DeliveryCache = ctx.delivery

    async def lookups() -> tuple[int, int]:
        pid = await cache.project_id("cached")
        assert pid is not None
        assert await cache.candidates(pid, "production", "ios", "1")
        for i in range(MAX_RUNTIME_LISTS + 100):
            assert not await cache.candidates(pid, "production", "ios", f"random-{i}")
        hits = cache.hits
        assert await cache.candidates(pid, "production", "ios", "1")
        assert not await cache.candidates(pid, "production", "ios", "random-7")
        return hits, cache.hits

    before, after = asyncio.run(lookups())
    assert after == before + 2


def test_failed_loads_answer_from_the_snapshot_and_back_off(
    published: tuple[Any, dict[str, Any]],
) -> None:
    """Edits in a row leave the snapshot whole; while loads fail devices get it, the database
    is left alone between retries, and the first load that works is served at once."""
    from sqlalchemy.exc import OperationalError

    from lumora_ota.store.outage import DependencyUnavailable

    ctx, ios = published
    cache: DeliveryCache = ctx.delivery
    request = SelectionRequest(channel="production", platform="ios", runtime_version="1")
    attempts: list[str] = []
    failing = True

    def refuse(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.current_thread().name.startswith("AnyIO"):
            attempts.append(statement)
            if failing:
                raise OperationalError(statement, {}, Exception("connection refused"))

    async def select() -> Any:
        pid = await cache.project_id("cached")
        assert pid is not None
        return await select_for_device(cache, pid, request)

    assert asyncio.run(select()).update.id == ios["id"]
    cache.invalidate()
    cache.invalidate()  # nothing loaded in between: the snapshot must still hold it all
    event.listen(ctx.engine, "before_cursor_execute", refuse)
    try:
        answers = [asyncio.run(select()) for _ in range(50)]
        assert {a.update.id for a in answers} == {ios["id"]}
        assert len(attempts) == 1  # then backing off: no query per request
        assert cache.stale_answers >= 50

        async def unknown_channel() -> Any:
            pid = await cache.project_id("cached")
            assert pid is not None
            other = SelectionRequest(channel="production", platform="android", runtime_version="1")
            return await select_for_device(cache, pid, other)

        # The android list was never loaded: nothing to answer from but the outage.
        cache._retry_at = 0.0
        with pytest.raises(DependencyUnavailable):
            asyncio.run(unknown_channel())

        failing = False
        cache._retry_at = 0.0  # the backoff elapsed
        assert asyncio.run(select()).update.id == ios["id"]
        assert cache._failures == 0
        assert cache.metrics()["failed_loads"] >= 2
    finally:
        event.remove(ctx.engine, "before_cursor_execute", refuse)


def test_throttled_log_writes_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from lumora_ota.store.outage import ThrottledLog

    logger = logging.getLogger("lumora_ota.test_throttle")
    throttled = ThrottledLog(logger, interval=3600)
    with caplog.at_level(logging.INFO, logger="lumora_ota.test_throttle"):
        written = [throttled.warning("db", "database down: %s", i) for i in range(1000)]
        throttled.recovered("db", "database back")
        throttled.warning("db", "database down: %s", "again")
    assert written.count(True) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "database down: 0",
        "database back",
        "database down: again",
    ]
