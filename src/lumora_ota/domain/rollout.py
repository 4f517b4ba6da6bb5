"""Gradual-rollout buckets.

Each (update, device) pair maps to a bucket in ``[0, ROLLOUT_BUCKETS)`` through SHA-256, so
membership is stable across checks and processes, independent between updates (a device in
the first 10% of one update is not always in the first 10% of the next), and monotonic in
the percentage: a device inside at 10% stays inside at 50%, because only the threshold moves.
"""

from __future__ import annotations

import hashlib

ROLLOUT_BUCKETS = 10_000


def rollout_bucket(update_id: str, device_id: str) -> int:
    """The device's bucket for ``update_id``: ``sha256("{update_id}:{device_id}")`` mod 10000."""
    digest = hashlib.sha256(f"{update_id}:{device_id}".encode()).digest()
    # 64 bits reduced mod 10^4: the modulo bias (< 10^-15) is far below anything measurable.
    return int.from_bytes(digest[:8], "big") % ROLLOUT_BUCKETS


def in_rollout(update_id: str, device_id: str | None, percentage: float) -> bool:
    """Whether the device is inside an update rolled out to ``percentage`` percent.

    100% includes everyone, devices without an id too; below 100% a device without an id is
    outside, since it cannot be bucketed stably.
    """
    if percentage >= 100:
        return True
    if percentage <= 0 or not device_id:
        return False
    return rollout_bucket(update_id, device_id) < percentage * (ROLLOUT_BUCKETS // 100)
