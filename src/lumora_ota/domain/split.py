"""The rollout split: how the devices of one channel, platform and runtime version divide
between its updates — what a channel view shows operators.

It follows ``select_update`` (``domain.selection``): a device gets the newest candidate that
is active, declares a runtime version matching the device's and includes the device in its
rollout. Rollout buckets of different updates are independent (``domain.rollout``), so a
device outside the newest update's r1 % lands inside the next one's r2 % with probability
r2: the shares are r1, (1 - r1)·r2, (1 - r1)(1 - r2)·r3, … until a candidate at 100 % (a
roll-back-to-embedded marker always is) takes the rest. What is left gets no update and keeps
running what it has (its embedded update). A paused channel serves nothing at all.

Shares are of devices that send an id (``eas-client-id``): below 100 % a device without one
is outside every rollout. Per-device failure lists are not modelled (they only move the
device that reported the failure).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lumora_ota.domain.model import UpdateRecord
from lumora_ota.domain.runtime import runtime_matches


@dataclass(frozen=True, slots=True)
class Share:
    """``percent`` of devices (0..100) get ``update``; None means no update."""

    update: UpdateRecord | None
    percent: float


def rollout_split(
    candidates: Iterable[UpdateRecord], runtime_version: str, *, paused: bool = False
) -> tuple[Share, ...]:
    """The split for devices running ``runtime_version``; ``candidates`` are one channel's and
    one platform's updates, newest first (as the delivery cache holds them).

    Every active matching candidate down to the first at 100 % is listed, a 0 % one too
    (with a 0 share: that is how an auto-paused update shows), then the no-update remainder
    when there is one. Shares sum to 100.
    """
    if paused:
        return (Share(None, 100.0),)
    remaining = 1.0
    shares: list[Share] = []
    for update in candidates:
        if not update.is_active or not runtime_matches(update.runtime_version, runtime_version):
            continue
        fraction = min(max(update.rollout, 0), 100) / 100
        shares.append(Share(update, remaining * fraction * 100))
        remaining -= remaining * fraction
        if fraction >= 1:
            return tuple(shares)
    shares.append(Share(None, remaining * 100))
    return tuple(shares)
