"""The selection memo per request shape (issue 21): a memoized answer is the answer a fresh
selection gives, for every device sending the shape, and a rollout or pin change drops it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Hashable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from device_helpers import expo_headers, in_process_app, parse_multipart
from harness import create_project, make_export, publish_export
from lumora_ota.domain.model import UpdateRecord
from lumora_ota.domain.runtime import runtime_matches
from lumora_ota.domain.selection import (
    IndexedCandidates,
    Selection,
    SelectionRequest,
    select_update,
)
from lumora_ota.server.device.delivery import apply_pin, request_shape, select_shared

PROJECT = "p"
CHANNELS = ("production", "staging", "beta")
PLATFORMS = ("ios", "android")
RUNTIMES = ("1", "2", "1.0.0", "1.x", "^1.0.0")
DEVICES = (None, "d1", "d2", "d3", "d4", "d5")
START = datetime(2026, 1, 1, tzinfo=UTC)


class FakeCache:
    """The part of the delivery cache selection reads, over a fixed channel state."""

    def __init__(self, updates: list[UpdateRecord], pins: dict[str, str]) -> None:
        self.updates = sorted(updates, key=lambda u: (u.created_at, u.id), reverse=True)
        self._pins = pins
        self.stale_answers = 0

    def filtered(self, channel: str, platform: str, runtime_version: str) -> IndexedCandidates:
        return IndexedCandidates(
            u
            for u in self.updates
            if u.channel == channel
            and u.platform == platform
            and runtime_matches(u.runtime_version, runtime_version)
        )

    async def candidates(
        self, _project_id: str, channel: str, platform: str, runtime_version: str
    ) -> IndexedCandidates:
        return self.filtered(channel, platform, runtime_version)

    async def full_update(self, update: UpdateRecord) -> UpdateRecord:
        return update

    async def pins(self, _project_id: str) -> dict[str, str]:
        return self._pins


@st.composite
def channel_states(draw: st.DrawFn) -> tuple[list[UpdateRecord], dict[str, str]]:
    count = draw(st.integers(0, 8))
    updates = []
    for n in range(count):
        updates.append(
            UpdateRecord(
                id=f"u{n}",
                group_id=f"g{n}",
                project_id=PROJECT,
                channel=draw(st.sampled_from(CHANNELS)),
                platform=draw(st.sampled_from(PLATFORMS)),
                runtime_version=draw(st.sampled_from(RUNTIMES)),
                created_at=START + timedelta(seconds=n),
                kind=draw(st.sampled_from(["update", "update", "rollback_to_embedded"])),
                rollout=draw(st.sampled_from([0, 1, 30, 50, 99, 100, 100, 100])),
                mandatory=draw(st.booleans()),
                status=draw(st.sampled_from(["active", "active", "rolled_back"])),
            )
        )
    pinned = draw(st.lists(st.sampled_from([d for d in DEVICES if d]), unique=True, max_size=3))
    pins = {device: draw(st.sampled_from(CHANNELS)) for device in pinned}
    return updates, pins


@st.composite
def requests(draw: st.DrawFn, ids: list[str]) -> SelectionRequest:
    some_id = st.sampled_from([*ids, "other"]) if ids else st.just("other")
    return SelectionRequest(
        channel=draw(st.sampled_from(CHANNELS)),
        platform=draw(st.sampled_from(PLATFORMS)),
        runtime_version=draw(st.sampled_from(["1", "2", "1.0.0", "1.5.0"])),
        current_update_id=draw(st.none() | some_id),
        embedded_update_id=draw(st.none() | some_id),
        device_id=draw(st.sampled_from(DEVICES)),
        failed_update_ids=frozenset(draw(st.lists(some_id, max_size=2))),
    )


@settings(max_examples=400, deadline=None)
@given(data=st.data(), state=channel_states())
def test_memoized_answer_equals_fresh_selection(
    data: st.DataObject, state: tuple[list[UpdateRecord], dict[str, str]]
) -> None:
    updates, pins = state
    cache: Any = FakeCache(updates, pins)
    ids = [u.id for u in updates]
    shapes = data.draw(st.lists(requests(ids), min_size=1, max_size=6))
    # Each shape asked by several devices, in random order: the first one fills the memo.
    asked = [
        SelectionRequest(
            s.channel,
            s.platform,
            s.runtime_version,
            s.current_update_id,
            s.embedded_update_id,
            device,
            s.failed_update_ids,
        )
        for s in shapes
        for device in DEVICES
    ]
    asked = data.draw(st.permutations(asked))
    memo: dict[Hashable, Selection] = {}

    async def run() -> None:
        for request in asked:
            pinned = await apply_pin(cache, PROJECT, request)
            key = request_shape(PROJECT, pinned)
            if key in memo:
                answer = memo[key]
            else:
                answer, shareable = await select_shared(cache, PROJECT, pinned)
                if shareable:
                    memo[key] = answer
            fresh = select_update(
                cache.filtered(pinned.channel, pinned.platform, pinned.runtime_version), pinned
            )
            assert answer == fresh, (request, pinned)

    asyncio.run(run())


def test_partial_rollout_is_not_shareable() -> None:
    update = UpdateRecord(
        id="u", group_id="g", project_id=PROJECT, channel="production", platform="ios",
        runtime_version="1", created_at=START, rollout=50,
    )  # fmt: skip
    cache: Any = FakeCache([update], {})
    request = SelectionRequest("production", "ios", "1", device_id="d1")
    _, shareable = asyncio.run(select_shared(cache, PROJECT, request))
    assert not shareable
    full: Any = FakeCache([replace(update, rollout=100)], {})
    assert asyncio.run(select_shared(full, PROJECT, request))[1]


def test_rollout_and_pin_changes_drop_the_memo(tmp_path: Path) -> None:
    quiet = {"plan_interval": 3600, "webhook_poll_interval": 60}
    with in_process_app(tmp_path, cache_poll_interval=3600, stats_flush_interval=3600, **quiet) as (
        client,
        ctx,
    ):
        create_project(client, "memo")
        first, _ = publish_export(client, "memo", make_export(tmp_path / "a", seed="a"))
        second, _ = publish_export(client, "memo", make_export(tmp_path / "b", seed="b"))
        staging, _ = publish_export(
            client, "memo", make_export(tmp_path / "c", seed="c"), channel="staging"
        )
        ios = {
            name: next(u for u in answer["updates"] if u["platform"] == "ios")
            for name, answer in (("first", first), ("second", second), ("staging", staging))
        }

        def served(device: str) -> str | None:
            resp = client.get(
                "/api/v1/expo/memo/manifest", headers=expo_headers(eas_client_id=device)
            )
            assert resp.status_code == 200, resp.text
            parts = parse_multipart(resp)
            if "manifest" not in parts:
                return None
            return str(json.loads(parts["manifest"].body)["id"])

        assert served("dev-a") == ios["second"]["id"]
        assert ctx.delivery.shape_memo(), "a 100% channel's answer is memoized"
        assert served("dev-b") == ios["second"]["id"]
        # A rollout of 0%: nobody gets the newest, whatever the memo held.
        resp = client.patch(f"/api/v1/updates/{ios['second']['id']}", json={"rollout": 0})
        assert resp.status_code == 200, resp.text
        assert served("dev-a") == ios["first"]["id"]
        # Pinning one device sends it to staging; the others keep the shared answer.
        resp = client.put("/api/v1/projects/memo/devices/dev-a", json={"channel": "staging"})
        assert resp.status_code in (200, 201), resp.text
        assert served("dev-a") == ios["staging"]["id"]
        assert served("dev-b") == ios["first"]["id"]
        # A partial rollout: the answer depends on the device and is not memoized.
        resp = client.patch(f"/api/v1/updates/{ios['second']['id']}", json={"rollout": 50})
        assert resp.status_code == 200, resp.text
        got = {served(f"dev-{n}") for n in range(40)}
        assert got == {ios["first"]["id"], ios["second"]["id"]}
        assert not ctx.delivery.shape_memo()


def test_header_parsing_memo_keeps_each_request_its_own() -> None:
    from lumora_ota.server.device.expo import selection_request
    from lumora_ota.server.problems import ProblemError

    headers = {
        "expo-platform": "ios",
        "expo-runtime-version": " 1 ",
        "expo-current-update-id": "ABC",
        "expo-recent-failed-update-ids": '"X", "y"',
    }
    for device in ("d1", "d2", None):
        with_device = {**headers, "eas-client-id": device} if device else headers
        assert selection_request(with_device, {}) == SelectionRequest(
            "production", "ios", "1", "abc", None, device, frozenset({"x", "y"})
        )
    # The query's values when the headers have none; a bad request raises every time.
    assert selection_request({}, {"platform": "android", "runtime-version": "2"}).platform == (
        "android"
    )
    for _ in range(2):
        try:
            selection_request({**headers, "expo-platform": "web"}, {})
        except ProblemError as exc:
            assert exc.status == 400
        else:
            raise AssertionError("a bad platform must be refused")
