"""Reading the answer of ``POST /api/v1/updates/check``, verifying signatures first.

With a certificate configured, the manifest and directive of an answer are only used after
their signature verifies against the exact bytes it covers, so no asset URL of an unsigned or
tampered manifest is ever fetched; and only when its freshness statement
(``lumora_ota.freshness``) verifies too, covers those bytes, names this device's stream, has
not expired and is not older than the newest one seen (``check_freshness``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

from lumora_ota.client._internal.signature import verify_signature
from lumora_ota.client.errors import ServerResponseError, SignatureError, StaleAnswerError
from lumora_ota.freshness import Freshness, FreshnessError, body_digest


@dataclass(frozen=True)
class CheckAnswer:
    """The parts of a check answer, trusted (verified when a certificate is configured)."""

    update_available: bool
    is_mandatory: bool
    manifest: dict[str, Any] | None
    directive: dict[str, Any] | None
    message: str
    signature_verified: bool
    # The verified freshness statement of a signed answer (None unsigned).
    freshness: Freshness | None = None


def compact_json(value: Any) -> bytes:
    """The compact UTF-8 JSON serialization the server signs."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _load_text(doc: Mapping[str, Any], name: str) -> tuple[str | None, Any]:
    text = doc.get(name)
    if not isinstance(text, str):
        return None, None
    try:
        return text, json.loads(text)
    except ValueError as exc:
        raise ServerResponseError(f"{name} is not JSON") from exc


def _verify_part(
    certificate: x509.Certificate,
    doc: Mapping[str, Any],
    headers: Mapping[str, str],
    body: bytes,
    part: str,
) -> tuple[Any, bytes | None]:
    """The verified ``manifest``/``directive`` object of the answer and the bytes its
    signature covers; (None, None) when absent."""
    text, parsed = _load_text(doc, f"{part}Text")
    signature = (
        doc.get(f"{part}Signature")
        or doc.get("signature")
        or headers.get(f"{part}-signature")
        or headers.get("expo-signature")
    )
    if not isinstance(signature, str | None):
        raise SignatureError(f"the {part} signature is not a string")
    if text is not None:
        signed = text.encode("utf-8")
        verify_signature(certificate, signature, signed)
        return parsed, signed
    value = doc.get(part)
    if value is None:
        return None, None
    # The signature covers either the part's exact bytes (which the server embeds as compact
    # JSON, so re-serializing the parsed object reproduces them) or the whole body.
    signed = compact_json(value)
    try:
        verify_signature(certificate, signature, signed)
    except SignatureError:
        verify_signature(certificate, signature, body)
        signed = body
    return value, signed


def _verify_freshness(
    certificate: x509.Certificate, doc: Mapping[str, Any], signed_part: bytes | None
) -> Freshness:
    """The answer's freshness statement, verified under ``certificate`` and bound to the
    bytes of its signed manifest or directive."""
    text = doc.get("freshnessText")
    signature = doc.get("freshnessSignature")
    if not isinstance(text, str) or not isinstance(signature, str):
        raise StaleAnswerError("the signed answer carries no freshness statement")
    try:
        verify_signature(certificate, signature, text.encode("utf-8"))
    except SignatureError as exc:
        raise StaleAnswerError(f"the freshness statement does not verify: {exc}") from exc
    try:
        freshness = Freshness.parse(text)
    except FreshnessError as exc:
        raise StaleAnswerError(str(exc)) from exc
    if signed_part is None or body_digest(signed_part) != freshness.body_sha256:
        raise StaleAnswerError("the freshness statement covers another answer")
    return freshness


def check_freshness(
    freshness: Freshness,
    *,
    project_id: str,
    channel: str,
    platform: str,
    now: datetime,
    newest_seen: int | None,
    offers_update: bool,
) -> None:
    """``StaleAnswerError`` unless ``freshness`` is for this device's stream (a project's
    unknown-channel statement, ``channel == ""``, only for an answer offering nothing), has
    not expired at ``now`` and has a sequence at least ``newest_seen``."""
    if freshness.project_id != project_id or freshness.platform != platform:
        raise StaleAnswerError("the answer was signed for another project or platform")
    if freshness.channel != channel and (freshness.channel != "" or offers_update):
        raise StaleAnswerError("the answer was signed for another channel")
    if now > freshness.expires:
        raise StaleAnswerError(f"the signed answer expired at {freshness.expires.isoformat()}")
    if newest_seen is not None and freshness.sequence < newest_seen:
        raise StaleAnswerError(
            f"the signed answer (sequence {freshness.sequence}) is older than one already "
            f"seen (sequence {newest_seen}): replayed or from a stale server"
        )


def read_check_answer(
    body: bytes,
    headers: Mapping[str, str],
    certificate: x509.Certificate | None,
    freshness_certificate: x509.Certificate | None = None,
) -> CheckAnswer:
    """Parse (and, with a certificate, verify) a check answer. The freshness statement is
    verified under ``freshness_certificate`` (the server's online timestamp key, when the
    publisher holds the signing key), else under ``certificate``."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ServerResponseError("the check answer is not JSON") from exc
    if not isinstance(doc, dict):
        raise ServerResponseError("the check answer is not a JSON object")
    freshness = None
    if certificate is not None:
        manifest, manifest_bytes = _verify_part(certificate, doc, headers, body, "manifest")
        directive, directive_bytes = _verify_part(certificate, doc, headers, body, "directive")
        freshness = _verify_freshness(
            freshness_certificate or certificate, doc, manifest_bytes or directive_bytes
        )
    else:
        manifest = _load_text(doc, "manifestText")[1] or doc.get("manifest")
        directive = _load_text(doc, "directiveText")[1] or doc.get("directive")
    if manifest is not None and not isinstance(manifest, dict):
        raise ServerResponseError("manifest is not an object")
    if directive is not None and not isinstance(directive, dict):
        raise ServerResponseError("directive is not an object")
    message = doc.get("message")
    if not isinstance(message, str) and manifest is not None:
        metadata = manifest.get("metadata")
        message = metadata.get("message") if isinstance(metadata, dict) else None
    return CheckAnswer(
        update_available=bool(doc.get("updateAvailable")) and manifest is not None,
        is_mandatory=bool(doc.get("isMandatory")),
        manifest=manifest,
        directive=directive,
        message=message if isinstance(message, str) else "",
        signature_verified=certificate is not None,
        freshness=freshness,
    )
