"""Building Expo Updates v1 manifests (and the Lumora check API's richer variant).

The manifest of an update is a pure function of the update, the asset base URL and — for
updates that declare a runtime-version range — the runtime version the device asked with, so
servers cache the serialized bytes per (update, runtime version).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lumora_ota.domain.hashes import b64url_from_hex
from lumora_ota.domain.model import AssetRecord, UpdateRecord


def iso_time(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``, as Expo clients expect."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def asset_url(asset_base_url: str, sha256: str, file_extension: str = "") -> str:
    """The immutable URL of a blob: ``{base}/{sha256}{ext}``."""
    return f"{asset_base_url.rstrip('/')}/{sha256}{file_extension}"


def manifest_asset_key(asset: AssetRecord) -> str:
    """The manifest ``key`` of an asset: the md5 of its bytes, in lowercase hex.

    expo-updates maps each key to the downloaded file (``localAssets``) and expo-asset looks
    images and fonts up there by Metro's asset hash, the md5 of the file (also its name under
    ``assets/`` in an export, and what Expo's reference server sends). A flat, content-derived
    key also lets the client share identical files between updates. Only a blob whose bytes
    the server could not read yet has no md5; it falls back to a SHA-256-derived key.
    """
    return asset.md5 or asset.sha256[:32]


def _asset_entry(
    asset: AssetRecord, asset_base_url: str, *, launch: bool, lumora_fields: bool
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "hash": b64url_from_hex(asset.sha256),
        "key": manifest_asset_key(asset),
        "contentType": asset.content_type,
    }
    if asset.file_extension or not launch:
        entry["fileExtension"] = asset.file_extension
    entry["url"] = asset_url(asset_base_url, asset.sha256, asset.file_extension)
    if lumora_fields:
        entry["path"] = asset.key
        entry["sha256"] = asset.sha256
        entry["size"] = asset.size
    return entry


def _distinct_assets(update: UpdateRecord) -> list[AssetRecord]:
    """The update's assets, one per manifest key: files published under two paths with the
    same bytes share a key, and expo-updates stores one file per key."""
    seen = {manifest_asset_key(update.launch_asset)} if update.launch_asset else set()
    distinct: list[AssetRecord] = []
    for asset in update.assets:
        key = manifest_asset_key(asset)
        if key not in seen:
            seen.add(key)
            distinct.append(asset)
    return distinct


def build_manifest(
    update: UpdateRecord,
    asset_base_url: str,
    *,
    runtime_version: str | None = None,
    lumora_fields: bool = False,
) -> dict[str, Any]:
    """The manifest of ``update``.

    ``runtime_version`` replaces the update's own when it declared a range, so the client
    sees the exact version it runs. ``lumora_fields`` adds each file's ``path`` (its key in
    the publish), ``sha256`` and ``size`` for the Lumora SDK.
    """
    if update.launch_asset is None:
        raise ValueError(f"update {update.id} has no launch asset")
    return {
        "id": update.id,
        "createdAt": iso_time(update.created_at),
        "runtimeVersion": runtime_version or update.runtime_version,
        "launchAsset": _asset_entry(
            update.launch_asset, asset_base_url, launch=True, lumora_fields=lumora_fields
        ),
        "assets": [
            _asset_entry(a, asset_base_url, launch=False, lumora_fields=lumora_fields)
            for a in _distinct_assets(update)
        ],
        "metadata": dict(update.metadata),
        "extra": dict(update.extra),
    }
