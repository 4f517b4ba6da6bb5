"""Checking ``expo-signature`` values against the certificate the app embeds.

The RSA primitives are ``lumora_ota.signing``'s (pure ``cryptography``, no server imports);
this module adds parsing of the structured-field value and the SDK's error type.
"""

from __future__ import annotations

import re
from pathlib import Path

from cryptography import x509

from lumora_ota.client.errors import SignatureError
from lumora_ota.signing import (
    SIGNATURE_ALGORITHM,
    SigningError,
    load_certificate,
    verify_rsa_sha256,
)

_DICT_MEMBER = re.compile(r'\s*([a-z*][a-z0-9_.*-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,;\s]+)\s*(?:,|$)')


def parse_signature_header(value: str) -> dict[str, str]:
    """Parse a structured-field dictionary like ``sig="...", keyid="main", alg="..."``."""
    members: dict[str, str] = {}
    position = 0
    value = value.strip()
    while position < len(value):
        match = _DICT_MEMBER.match(value, position)
        if match is None:
            raise SignatureError(f"malformed expo-signature value: {value[:80]!r}")
        raw = match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        members[match.group(1)] = raw
        position = match.end()
    return members


def load_trusted_certificate(certificate: bytes | str | Path) -> x509.Certificate:
    """The app's certificate, from PEM bytes or a file path."""
    pem = certificate if isinstance(certificate, bytes) else Path(certificate).read_bytes()
    try:
        return load_certificate(pem)
    except SigningError as exc:
        raise SignatureError(f"the configured certificate is unusable: {exc}") from exc


def verify_signature(
    certificate: x509.Certificate, signature_value: str | None, data: bytes
) -> str:
    """Check an ``expo-signature`` value over ``data``; returns its keyid (or "")."""
    if not signature_value:
        raise SignatureError("the server's answer is not signed")
    members = parse_signature_header(signature_value)
    algorithm = members.get("alg", SIGNATURE_ALGORITHM)
    if algorithm != SIGNATURE_ALGORITHM:
        raise SignatureError(f"unsupported signature algorithm {algorithm!r}")
    sig = members.get("sig")
    if not sig:
        raise SignatureError("the expo-signature value has no sig")
    if not verify_rsa_sha256(certificate, data, sig):
        raise SignatureError("the signature does not match the signed bytes")
    return members.get("keyid", "")
