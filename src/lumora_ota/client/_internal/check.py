"""Reading the answer of ``POST /api/v1/updates/check``, verifying signatures first.

With a certificate configured, the manifest and directive of an answer are only used after
their signature verifies against the exact bytes it covers, so no asset URL of an unsigned or
tampered manifest is ever fetched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from lumora_ota.client._internal.signature import verify_signature
from lumora_ota.client.errors import ServerResponseError, SignatureError


@dataclass(frozen=True)
class CheckAnswer:
    """The parts of a check answer, trusted (verified when a certificate is configured)."""

    update_available: bool
    is_mandatory: bool
    manifest: dict[str, Any] | None
    directive: dict[str, Any] | None
    message: str
    signature_verified: bool


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
) -> Any:
    """The verified ``manifest``/``directive`` object of the answer, or None when absent."""
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
        verify_signature(certificate, signature, text.encode("utf-8"))
        return parsed
    value = doc.get(part)
    if value is None:
        return None
    # The signature covers either the part's exact bytes (which the server embeds as compact
    # JSON, so re-serializing the parsed object reproduces them) or the whole body.
    try:
        verify_signature(certificate, signature, compact_json(value))
    except SignatureError:
        verify_signature(certificate, signature, body)
    return value


def read_check_answer(
    body: bytes, headers: Mapping[str, str], certificate: x509.Certificate | None
) -> CheckAnswer:
    """Parse (and, with a certificate, verify) a check answer."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ServerResponseError("the check answer is not JSON") from exc
    if not isinstance(doc, dict):
        raise ServerResponseError("the check answer is not a JSON object")
    if certificate is not None:
        manifest = _verify_part(certificate, doc, headers, body, "manifest")
        directive = _verify_part(certificate, doc, headers, body, "directive")
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
    )
