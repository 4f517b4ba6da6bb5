"""Conversions between the hash spellings used on the wire."""

from __future__ import annotations

import base64
import hashlib


def b64url_from_hex(sha256_hex: str) -> str:
    """Base64url without padding of a hex SHA-256, as Expo manifests carry it."""
    return base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).rstrip(b"=").decode("ascii")


def hex_from_b64url(value: str) -> str:
    """The hex SHA-256 of an Expo base64url hash."""
    padded = value + "=" * (-len(value) % 4)
    return base64.urlsafe_b64decode(padded).hex()


def sha256_b64url(data: bytes) -> str:
    """Base64url SHA-256 of ``data``, without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
