"""Parsing and validating the manifest of the Lumora check API.

The manifest is the Expo Updates shape plus, per asset, ``path`` (where the file goes in the
update directory), ``sha256`` (hex) and ``size``. Everything the SDK later trusts — URLs,
paths, hashes, sizes — is checked here once, so the download and install code works on typed,
validated records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from lumora_ota.client._internal.fs import validate_relative_path
from lumora_ota.client.errors import ServerResponseError
from lumora_ota.domain.hashes import hex_from_b64url
from lumora_ota.domain.paths import file_and_directory_problem

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_UPDATE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class ManifestAsset:
    """One file of an update."""

    path: str  # relative path inside the update directory
    sha256: str  # lowercase hex
    size: int
    url: str  # absolute
    key: str
    content_type: str
    file_extension: str


@dataclass(frozen=True)
class Manifest:
    """A validated update manifest."""

    id: str
    created_at: str
    runtime_version: str
    launch_asset: ManifestAsset
    assets: tuple[ManifestAsset, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def files(self) -> tuple[ManifestAsset, ...]:
        """The launch asset followed by the other assets."""
        return (self.launch_asset, *self.assets)

    @property
    def total_size(self) -> int:
        """Bytes of all distinct blobs of the update."""
        return sum({a.sha256: a.size for a in self.files}.values())


def _asset(raw: Any, base_url: str, what: str) -> ManifestAsset:
    if not isinstance(raw, dict):
        raise ServerResponseError(f"manifest {what} is not an object")
    sha256 = raw.get("sha256")
    size = raw.get("size")
    url = raw.get("url")
    if not isinstance(sha256, str) or not _SHA256_HEX.match(sha256):
        raise ServerResponseError(f"manifest {what} lacks a hex sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ServerResponseError(f"manifest {what} lacks a valid size")
    if not isinstance(url, str) or not url:
        raise ServerResponseError(f"manifest {what} lacks a url")
    expo_hash = raw.get("hash")
    if expo_hash is not None:
        try:
            matches = isinstance(expo_hash, str) and hex_from_b64url(expo_hash) == sha256
        except ValueError:
            matches = False
        if not matches:
            raise ServerResponseError(f"manifest {what}: hash and sha256 disagree")
    return ManifestAsset(
        path=validate_relative_path(raw.get("path")),
        sha256=sha256,
        size=size,
        url=urljoin(base_url, url),
        key=str(raw.get("key", "")),
        content_type=str(raw.get("contentType", "application/octet-stream")),
        file_extension=str(raw.get("fileExtension", "")),
    )


def parse_manifest(raw: Any, base_url: str) -> Manifest:
    """Validate a manifest object; relative asset URLs resolve against ``base_url``."""
    if not isinstance(raw, dict):
        raise ServerResponseError("manifest is not an object")
    update_id = raw.get("id")
    if not isinstance(update_id, str) or not _UPDATE_ID.match(update_id):
        raise ServerResponseError(f"manifest id {update_id!r} is not a valid update id")
    assets_raw = raw.get("assets", [])
    if not isinstance(assets_raw, list):
        raise ServerResponseError("manifest assets is not a list")
    launch = _asset(raw.get("launchAsset"), base_url, "launchAsset")
    assets = tuple(_asset(a, base_url, f"assets[{i}]") for i, a in enumerate(assets_raw))
    seen: set[str] = set()
    for asset in (launch, *assets):
        if asset.path in seen:
            raise ServerResponseError(f"manifest lists the path {asset.path!r} twice")
        seen.add(asset.path)
    # Refused before any download: such an update could never be installed.
    problem = file_and_directory_problem(seen)
    if problem:
        raise ServerResponseError(f"manifest: {problem}")
    metadata = raw.get("metadata") or {}
    extra = raw.get("extra") or {}
    return Manifest(
        id=update_id,
        created_at=str(raw.get("createdAt", "")),
        runtime_version=str(raw.get("runtimeVersion", "")),
        launch_asset=launch,
        assets=assets,
        metadata=metadata if isinstance(metadata, dict) else {},
        extra=extra if isinstance(extra, dict) else {},
    )
