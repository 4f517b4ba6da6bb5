"""The selection engine: which update (or directive) a device gets.

``select_update`` is pure. Its candidates are one channel's and one platform's updates, newest
first (the delivery cache keeps them in that order); the request says what the device runs.

Rules, in order:

* **Eligible** candidates are active (not rolled back), of the request's channel and platform,
  declare a runtime version that matches the device's (``domain.runtime``), include the device
  in their rollout (``domain.rollout``; devices without an id only at 100%), and are not among
  the device's recently failed update ids (``expo-recent-failed-update-ids``: serving an
  update that just failed to launch again would loop, so the device gets the previous one).
* The **newest eligible** candidate decides. A roll-back-to-embedded marker yields the
  ``rollBackToEmbedded`` directive — unless the device already runs its embedded update
  (current id equal to embedded id), which is "no update". Older candidates behind a marker
  are never served: the marker cuts history off.
* A regular update the device already runs (current id equal to the update's id) is "no
  update"; otherwise it is served.
* **Mandatory:** the served update is mandatory when any eligible regular update created after
  the device's current one, up to and including the served one, is mandatory — the device is
  skipping a release it was required to take. When the device's current update is not among
  the candidates (it runs its embedded update, or an update of another channel), every
  eligible update up to the served one counts, as in CodePush. Updates the device was
  outside the rollout of, or that failed on it, never make it mandatory.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal, overload

from lumora_ota.domain.model import UpdateRecord
from lumora_ota.domain.rollout import in_rollout
from lumora_ota.domain.runtime import runtime_matches

SelectionKind = Literal["update", "no_update", "rollback_to_embedded"]


@dataclass(frozen=True, slots=True)
class SelectionRequest:
    """What the device told us about itself."""

    channel: str
    platform: str
    runtime_version: str
    current_update_id: str | None = None
    embedded_update_id: str | None = None
    device_id: str | None = None
    failed_update_ids: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Selection:
    """The engine's answer.

    ``update`` is the served update for ``"update"``, the roll-back-to-embedded marker for
    ``"rollback_to_embedded"``, and for ``"no_update"`` the update the device already runs
    when that is the newest eligible one (protocol-0 clients get its manifest again), else None.
    """

    kind: SelectionKind
    update: UpdateRecord | None = None
    is_mandatory: bool = False

    @property
    def update_available(self) -> bool:
        """Whether the device should download something new."""
        return self.kind == "update"


NO_UPDATE = Selection(kind="no_update")


def is_eligible(update: UpdateRecord, request: SelectionRequest) -> bool:
    """Whether ``update`` may be served to the device described by ``request``."""
    return (
        update.is_active
        and update.channel == request.channel
        and update.platform == request.platform
        and update.id not in request.failed_update_ids
        and runtime_matches(update.runtime_version, request.runtime_version)
        and in_rollout(update.id, request.device_id, update.rollout)
    )


class IndexedCandidates(Sequence[UpdateRecord]):
    """Candidates (newest first) with what a request looks up precomputed, built once per list.

    Selection must cost the same whether a channel holds one update or ten thousand, so the
    per-request work may not walk the history: the device's current update is found by id, and
    the mandatory check visits only the positions that can change its answer (mandatory
    updates and roll-back-to-embedded markers). That shortcut relies on the order newest
    first; for a list that is not ordered by ``created_at`` every position is visited.
    """

    __slots__ = ("_flagged", "_ordered", "_positions", "device_independent", "updates")

    def __init__(self, updates: Iterable[UpdateRecord]) -> None:
        self.updates: tuple[UpdateRecord, ...] = tuple(updates)
        positions: dict[str, int] = {}
        for position, update in enumerate(self.updates):
            positions.setdefault(update.id, position)
        self._positions = positions
        self._flagged = tuple(
            position
            for position, update in enumerate(self.updates)
            if update.mandatory or update.kind == "rollback_to_embedded"
        )
        self._ordered = all(
            newer.created_at >= older.created_at for newer, older in pairwise(self.updates)
        )
        # Whether no request's answer can depend on its device id: the id only enters
        # selection through a partial rollout (``in_rollout``: 0% and 100% ignore it), and
        # rolled-back updates are never eligible. Answers may then be shared between devices
        # sending the same request shape (the delivery cache's selection memo).
        self.device_independent = not any(
            update.is_active and 0 < update.rollout < 100 for update in self.updates
        )

    @overload
    def __getitem__(self, index: int) -> UpdateRecord: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[UpdateRecord, ...]: ...

    def __getitem__(self, index: int | slice) -> UpdateRecord | tuple[UpdateRecord, ...]:
        return self.updates[index]

    def __len__(self) -> int:
        return len(self.updates)

    def __iter__(self) -> Iterator[UpdateRecord]:
        return iter(self.updates)

    def position(self, update_id: str | None) -> int | None:
        """Where the update with id ``update_id`` is, None when it is not a candidate."""
        return None if update_id is None else self._positions.get(update_id)

    def mandatory_check_positions(self, start: int) -> Iterator[int]:
        """The positions from ``start`` on (older) that the mandatory check must look at."""
        if not self._ordered:
            yield from range(start, len(self.updates))
            return
        flagged = self._flagged
        for k in range(bisect_left(flagged, start), len(flagged)):
            yield flagged[k]


def _skips_mandatory(
    candidates: IndexedCandidates, served_at: int, request: SelectionRequest
) -> bool:
    """Whether an eligible mandatory update lies in (device's current, served]."""
    # The device's current update need not be eligible any more (rolled back since, say);
    # only its place in time matters.
    current_at = candidates.position(request.current_update_id)
    current = candidates[current_at] if current_at is not None else None
    # Only mandatory updates and markers can decide; in a list ordered newest first, once one
    # of them is not newer than the current update, no later position is either.
    for position in candidates.mandatory_check_positions(served_at):
        update = candidates[position]
        if current is not None and update.created_at <= current.created_at:
            return False
        if update.kind == "rollback_to_embedded":
            if is_eligible(update, request):
                return False  # a marker cuts history off
            continue
        # The flag first: eligibility costs a hash per update.
        if update.mandatory and is_eligible(update, request):
            return True
    return False


def select_update(candidates: Sequence[UpdateRecord], request: SelectionRequest) -> Selection:
    """Choose what the device gets from ``candidates`` (newest first). See the module doc.

    Pass an ``IndexedCandidates`` (the delivery cache keeps one per candidate list) and the
    cost does not grow with history: the scan stops at the newest eligible candidate, and the
    mandatory check visits only mandatory updates and markers. Any other sequence is indexed
    on the spot (O(n)), with the same answers.
    """
    if not isinstance(candidates, IndexedCandidates):
        candidates = IndexedCandidates(candidates)
    found = next(((i, u) for i, u in enumerate(candidates) if is_eligible(u, request)), None)
    if found is None:
        return NO_UPDATE
    index, newest = found
    if newest.kind == "rollback_to_embedded":
        already_embedded = (
            request.embedded_update_id is not None
            and request.current_update_id == request.embedded_update_id
        )
        if already_embedded:
            return NO_UPDATE
        return Selection(kind="rollback_to_embedded", update=newest)
    if newest.id == request.current_update_id:
        return Selection(kind="no_update", update=newest)
    mandatory = _skips_mandatory(candidates, index, request)
    return Selection(kind="update", update=newest, is_mandatory=mandatory)


def is_rollback(candidates: Sequence[UpdateRecord], selection: Selection) -> bool:
    """Whether ``selection`` deliberately takes devices back (signed freshness statements say
    so, so the SDK accepts an update older than the one it runs): a roll-back-to-embedded
    directive, or an update older than one of ``candidates`` (newest first) that was rolled
    back. Walks only the candidates newer than the served update."""
    if selection.kind == "rollback_to_embedded":
        return True
    served = selection.update
    if selection.kind != "update" or served is None:
        return False
    for candidate in candidates:
        if candidate.created_at <= served.created_at:
            return False
        if candidate.status == "rolled_back":
            return True
    return False
