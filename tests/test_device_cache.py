"""The delivery cache: selection-only candidate lists, full records on demand, one load per key
however many requests miss at once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from device_helpers import in_process_app
from harness import create_project, make_export, publish_export
from lumora_ota.domain.selection import SelectionRequest
from lumora_ota.server.device.cache import DeliveryCache
from lumora_ota.server.device.delivery import select_for_device


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
    cache: DeliveryCache = ctx.components["delivery"]
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
    cache: DeliveryCache = ctx.components["delivery"]
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
