"""Delta updates, the pure part: which bases to diff from, when a patch is worth serving, and
whether a launch-asset request gets a patch or the full bundle.

The wire protocol is expo-updates' (SDK 55 to 57): only the launch-asset request negotiates. A
client that can apply patches sends ``A-IM: bsdiff`` with ``Expo-Current-Update-ID`` (the
update it runs: the patch base), ``Expo-Requested-Update-ID`` and ``Expo-Embedded-Update-ID``.
A patch answer is ``226 IM Used`` with ``im: bsdiff`` and ``expo-base-update-id``; anything
else gets the full bundle, which is always a correct answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

BSDIFF = "bsdiff"
DEFAULT_PATCH_BASES = 3
DEFAULT_MAX_RATIO = 0.5
# A-IM, and every header a patch answer depends on: caches must not mix the two answers.
PATCH_VARY = "A-IM, Expo-Current-Update-ID"
LAUNCH_ASSET_VARY = "A-IM, Expo-Current-Update-ID, Accept-Encoding"
PATCH_SUFFIX = ".bsdiff"


# bsdiff4.diff holds a suffix array of the base (two 8-byte integers per byte) besides both
# inputs: measured at 15 bytes per base byte over the inputs, for 4 and 16 MiB bundles.
BSDIFF_BYTES_PER_BASE_BYTE = 17
BSDIFF_BYTES_PER_TARGET_BYTE = 2
DEFAULT_MAX_BUNDLE_BYTES = 32 * 1024 * 1024
DEFAULT_MEMORY_BUDGET = 512 * 1024 * 1024


def bsdiff_memory(base_size: int, target_size: int) -> int:
    """Estimated peak memory (bytes) of diffing a ``base_size`` bundle into a ``target_size``
    one, inputs included."""
    return base_size * BSDIFF_BYTES_PER_BASE_BYTE + target_size * BSDIFF_BYTES_PER_TARGET_BYTE


def patch_skip_reason(
    base_size: int, target_size: int, *, max_bundle_bytes: int, memory_budget: int
) -> str | None:
    """Why a patch between bundles of these sizes is not computed (``too-large`` past the
    size cap, ``over-memory-budget`` past the memory budget), None when it is."""
    if max(base_size, target_size) > max_bundle_bytes:
        return "too-large"
    if bsdiff_memory(base_size, target_size) > memory_budget:
        return "over-memory-budget"
    return None


def patch_object_name(target_sha256: str, base_sha256: str) -> str:
    """The blob-store name of the patch turning ``base_sha256`` into ``target_sha256``."""
    return f"{target_sha256}.from-{base_sha256}{PATCH_SUFFIX}"


def accepts_bsdiff(a_im: str | None) -> bool:
    """Whether an ``A-IM`` header (RFC 3229: a list of instance manipulations, each with
    optional parameters) asks for ``bsdiff``."""
    if not a_im:
        return False
    for item in a_im.split(","):
        name = item.split(";", 1)[0].strip().lower()
        if name == BSDIFF:
            return True
    return False


def is_useful(patch_size: int, full_size: int, max_ratio: float = DEFAULT_MAX_RATIO) -> bool:
    """Whether a patch is meaningfully smaller than the full bundle (``full_size`` is the
    brotli size, or the raw size when there is no brotli variant)."""
    return full_size > 0 and patch_size < full_size * max_ratio


@dataclass(frozen=True, slots=True)
class BaseCandidate:
    """A possible patch base: an earlier update (or an embedded bundle) and its launch asset."""

    update_id: str
    launch_sha256: str


def select_bases(
    history: Iterable[BaseCandidate], target_sha256: str, limit: int = DEFAULT_PATCH_BASES
) -> list[BaseCandidate]:
    """The bases to diff from, from ``history`` (newest first): the first ``limit`` updates
    whose launch asset differs from the target's. Updates sharing a launch asset each get
    their row (devices name their update, not their bundle), but count once toward ``limit``
    and share one patch object."""
    chosen: list[BaseCandidate] = []
    distinct: set[str] = set()
    for candidate in history:
        if candidate.launch_sha256 == target_sha256:
            continue
        if candidate.launch_sha256 not in distinct:
            if len(distinct) >= limit:
                break
            distinct.add(candidate.launch_sha256)
        chosen.append(candidate)
    return chosen


@dataclass(frozen=True, slots=True)
class PatchEntry:
    """What the delivery side knows of one stored patch (a base and target content pair)."""

    target_sha256: str
    base_sha256: str
    size: int
    useful: bool


@dataclass(frozen=True, slots=True)
class LaunchRef:
    """An update's (or an embedded build's) launch asset, and the project it belongs to."""

    project_id: str
    sha256: str


@dataclass(frozen=True, slots=True)
class PatchIndexView:
    """What negotiation looks things up in.

    ``served``: updates still served (rolled-back ones are left out, so their patches go
    stale), by id. ``bases``: every update and registered embedded bundle a device may run,
    by (project id, update id). ``patches``: stored patches by (base sha256, target sha256):
    patches are about content, so a promoted or re-published copy of an update is patched
    like the original.
    """

    served: Mapping[str, LaunchRef]
    bases: Mapping[tuple[str, str], LaunchRef]
    patches: Mapping[tuple[str, str], PatchEntry]


@dataclass(frozen=True, slots=True)
class PatchRequest:
    """The launch-asset request headers that matter to negotiation."""

    asset_sha256: str
    a_im: str | None
    current_update_id: str | None
    requested_update_id: str | None
    embedded_update_id: str | None = None


class Outcome(StrEnum):
    """Why a request got a patch, or why not."""

    PATCH = "patch"
    NOT_REQUESTED = "not-requested"  # no A-IM: bsdiff
    MISSING_IDS = "missing-ids"  # no current or requested update id
    SAME_UPDATE = "same-update"  # the base is the requested update
    NOT_SERVED = "not-served"  # requested update unknown or no longer served (rolled back)
    WRONG_ASSET = "wrong-asset"  # the URL is not the requested update's launch asset
    UNKNOWN_BASE = "unknown-base"  # not an update (or embedded build) of the project
    NO_PATCH = "no-patch"  # nothing stored from the base's launch asset to this one
    NOT_USEFUL = "not-useful"


@dataclass(frozen=True, slots=True)
class Decision:
    """The negotiation result: ``patch`` is set exactly when ``outcome`` is PATCH."""

    outcome: Outcome
    patch: PatchEntry | None = None
    base_update_id: str | None = None


def decide(request: PatchRequest, index: PatchIndexView) -> Decision:
    """Patch or full bundle for one launch-asset request."""
    if not accepts_bsdiff(request.a_im):
        return Decision(Outcome.NOT_REQUESTED)
    base_id, target_id = request.current_update_id, request.requested_update_id
    if not base_id or not target_id:
        return Decision(Outcome.MISSING_IDS)
    if base_id == target_id:
        return Decision(Outcome.SAME_UPDATE)
    target = index.served.get(target_id)
    if target is None:
        return Decision(Outcome.NOT_SERVED)
    if target.sha256 != request.asset_sha256:
        return Decision(Outcome.WRONG_ASSET)
    base = index.bases.get((target.project_id, base_id))
    if base is None:
        return Decision(Outcome.UNKNOWN_BASE)
    entry = index.patches.get((base.sha256, target.sha256))
    if entry is None:
        return Decision(Outcome.NO_PATCH)
    if not entry.useful:
        return Decision(Outcome.NOT_USEFUL)
    return Decision(Outcome.PATCH, entry, base_id)
