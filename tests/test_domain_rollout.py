"""Rollout buckets: deterministic, monotonic in the percentage, and fair."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from lumora_ota.domain.rollout import ROLLOUT_BUCKETS, in_rollout, rollout_bucket

ids = st.text(min_size=1, max_size=40)
percentages = st.integers(min_value=0, max_value=100)


@given(update_id=ids, device_id=ids)
def test_bucket_is_deterministic_and_in_range(update_id: str, device_id: str) -> None:
    bucket = rollout_bucket(update_id, device_id)
    assert 0 <= bucket < ROLLOUT_BUCKETS
    assert rollout_bucket(update_id, device_id) == bucket
    assert in_rollout(update_id, device_id, 37) == in_rollout(update_id, device_id, 37)


@given(update_id=ids, device_id=ids, low=percentages, high=percentages)
def test_membership_is_monotonic_in_the_percentage(
    update_id: str, device_id: str, low: int, high: int
) -> None:
    low, high = sorted((low, high))
    if in_rollout(update_id, device_id, low):
        assert in_rollout(update_id, device_id, high)


@settings(max_examples=15, deadline=None)
@given(update_id=st.uuids().map(str), percentage=percentages)
def test_share_of_10000_devices_is_within_two_points(update_id: str, percentage: int) -> None:
    devices = [str(uuid.uuid4()) for _ in range(10_000)]
    inside = sum(in_rollout(update_id, device, percentage) for device in devices)
    assert abs(inside / 100 - percentage) <= 2


def test_extremes_and_devices_without_an_id() -> None:
    assert in_rollout("u", None, 100)
    assert in_rollout("u", "", 100)
    assert not in_rollout("u", None, 99)
    assert not in_rollout("u", "device", 0)
    assert in_rollout("u", "device", 100)


def test_bucket_follows_the_documented_formula() -> None:
    import hashlib

    digest = hashlib.sha256(b"update-1:device-1").digest()
    assert rollout_bucket("update-1", "device-1") == int.from_bytes(digest[:8], "big") % 10_000


def test_buckets_are_independent_between_updates() -> None:
    devices = [f"device-{i}" for i in range(2000)]
    first = {d for d in devices if in_rollout("update-a", d, 10)}
    second = {d for d in devices if in_rollout("update-b", d, 10)}
    # Independent 10% samples overlap in about 1% of devices, not in all of them.
    assert len(first & second) < len(first) / 2
