"""Serialized response bodies of the device endpoints, built and signed once per generation.

A manifest is a pure function of the update, the asset base URL and — for an update that
declares a runtime-version range — the runtime version the device runs; a directive is a pure
function of its type and parameters. Bodies are compact UTF-8 JSON; signatures cover exactly
these bytes.
"""

from __future__ import annotations

import json
from typing import Any

from lumora_ota.domain.manifest import build_manifest, iso_time
from lumora_ota.domain.model import UpdateRecord
from lumora_ota.domain.runtime import is_runtime_range
from lumora_ota.domain.selection import NO_UPDATE, Selection
from lumora_ota.server.device.cache import DeliveryCache
from lumora_ota.signing import PublisherIdentity, Signer

BodyKey = tuple[str, ...]


def dump_json(value: Any) -> bytes:
    """Compact UTF-8 JSON, the one serialization every device body uses."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def manifest_runtime_version(update: UpdateRecord, requested: str) -> str:
    """The runtime version a manifest states: the device's when the update declares a range."""
    return requested if is_runtime_range(update.runtime_version) else update.runtime_version


def manifest_key(update: UpdateRecord, requested: str, *, lumora_fields: bool) -> BodyKey:
    """The cache key of an update's manifest body for a device running ``requested``."""
    variant = "lumora" if lumora_fields else "expo"
    return ("manifest", variant, update.id, manifest_runtime_version(update, requested))


def manifest_body(
    cache: DeliveryCache,
    update: UpdateRecord,
    requested: str,
    asset_base_url: str,
    *,
    lumora_fields: bool,
) -> tuple[BodyKey, bytes]:
    """The manifest of ``update`` as served to a device running ``requested``, and its key."""
    key = manifest_key(update, requested, lumora_fields=lumora_fields)
    runtime_version = manifest_runtime_version(update, requested)

    def build() -> bytes:
        return dump_json(
            build_manifest(
                update,
                asset_base_url,
                runtime_version=runtime_version,
                lumora_fields=lumora_fields,
            )
        )

    return key, cache.memoize(key, build)


def selection_key(
    selection: Selection, requested: str, identity: Signer | None
) -> tuple[object, ...]:
    """What of a selection shapes a device answer: its kind, the served update and the
    runtime version its manifest states, whether it is mandatory, and the signing key. Device
    answers are memoized under this plus what the protocol adds (media type, version)."""
    update = selection.update
    return (
        selection.kind,
        update.id if update is not None else "",
        manifest_runtime_version(update, requested) if update is not None else "",
        selection.is_mandatory,
        identity.keyid if identity is not None else "",
    )


def rollback_directive(marker: UpdateRecord) -> dict[str, Any]:
    """The ``rollBackToEmbedded`` directive of a roll-back-to-embedded marker."""
    return {
        "type": "rollBackToEmbedded",
        "parameters": {"commitTime": iso_time(marker.created_at)},
    }


NO_UPDATE_DIRECTIVE: dict[str, Any] = {"type": "noUpdateAvailable"}


def directive_body(cache: DeliveryCache, marker: UpdateRecord | None) -> tuple[BodyKey, bytes]:
    """``rollBackToEmbedded`` for a marker, ``noUpdateAvailable`` for None; and its key."""
    if marker is None:
        key: BodyKey = ("directive", "noUpdateAvailable")
        return key, cache.memoize(key, lambda: dump_json(NO_UPDATE_DIRECTIVE))
    key = ("directive", "rollBackToEmbedded", marker.id)
    return key, cache.memoize(key, lambda: dump_json(rollback_directive(marker)))


def signature_for(cache: DeliveryCache, identity: Signer, key: BodyKey, body: bytes) -> str:
    """The ``expo-signature`` value of a body, computed once per body and key pair."""
    return cache.memoize(
        ("signature", identity.keyid, *key), lambda: identity.signature_header(body)
    )


def publisher_gate(
    cache: DeliveryCache,
    selection: Selection,
    requested: str,
    asset_base_url: str,
    signer: Signer | None,
    *,
    lumora_fields: bool,
) -> Selection:
    """``selection``, unless the project's publisher holds its key and has not signed the
    body it would serve (a new update awaiting ``lumora codesigning sign``, or a manifest whose
    asset URLs changed since it was signed): then "no update". The server never serves a
    body of such a project that its publisher did not sign, signed request or not."""
    update = selection.update
    if not isinstance(signer, PublisherIdentity) or update is None:
        return selection
    if selection.kind == "rollback_to_embedded":
        key, body = directive_body(cache, update)
    else:
        key, body = manifest_body(
            cache, update, requested, asset_base_url, lumora_fields=lumora_fields
        )
    # Hashed once per body and generation (an uploaded signature starts a new generation).
    signed = cache.memoize(("publisher-signed", signer.keyid, *key), lambda: signer.signs(body))
    return selection if signed else NO_UPDATE


def freshness_signer(signer: Signer) -> Signer | None:
    """What signs freshness statements: the server-held key itself, or — when the publisher
    holds the key — the server's online timestamp key (None when it has none)."""
    return signer.timestamp if isinstance(signer, PublisherIdentity) else signer
