"""Delta downloads of the launch asset: ask for a bsdiff patch, apply it, verify the result.

The SDK speaks expo-updates' protocol: the first request for a new launch asset carries
``A-IM: bsdiff``, ``Expo-Current-Update-ID`` (the running update: the base),
``Expo-Requested-Update-ID`` and ``Expo-Embedded-Update-ID``. A server that has a patch
answers ``226`` (or 200) with ``im: bsdiff`` and ``expo-base-update-id``; the patch is
applied to the base's launch asset with ``bsdiff4`` and must hash to the manifest's SHA-256.
On any failure the caller downloads the full asset without ``A-IM``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import bsdiff4

from lumora_ota.client._internal.manifest import ManifestAsset

BSDIFF = "bsdiff"


class PatchError(Exception):
    """The patch could not be used: fetch the full asset instead."""


@dataclass(frozen=True)
class PatchBase:
    """What the device holds to patch from, and the update it asks for."""

    base_update_id: str
    base_path: Path  # the running update's launch asset
    requested_update_id: str
    embedded_update_id: str | None = None

    def request_headers(self) -> dict[str, str]:
        """The headers that ask for a patch from this base."""
        headers = {
            "a-im": BSDIFF,
            "expo-current-update-id": self.base_update_id,
            "expo-requested-update-id": self.requested_update_id,
        }
        if self.embedded_update_id:
            headers["expo-embedded-update-id"] = self.embedded_update_id
        return headers


def is_patch_response(status: int, headers: Mapping[str, str], base: PatchBase) -> bool:
    """Whether an answer carries a patch; raises ``PatchError`` for one from another base."""
    if status not in (200, 226):
        return False
    manipulations = [m.strip().lower() for m in headers.get("im", "").split(",") if m.strip()]
    if BSDIFF not in manipulations:
        return False
    if headers.get("expo-base-update-id") != base.base_update_id:
        raise PatchError("the patch is from another base update")
    return True


def apply_patch(base: PatchBase, patch: bytes, asset: ManifestAsset) -> bytes:
    """The patched launch asset, verified against the manifest's size and SHA-256."""
    try:
        source = base.base_path.read_bytes()
        result: bytes = bsdiff4.patch(source, patch)
    except Exception as exc:  # bsdiff4 raises ValueError/RuntimeError on corrupt input
        raise PatchError(f"the patch cannot be applied: {exc}") from exc
    if len(result) != asset.size or hashlib.sha256(result).hexdigest() != asset.sha256:
        raise PatchError("the patched launch asset does not match the manifest's hash")
    return result
