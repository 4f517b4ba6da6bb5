"""Code signing: RSA keys, self-signed code-signing certificates and ``expo-signature``.

expo-updates verifies a manifest (or directive) with the certificate embedded in the app. It
accepts a certificate whose key usage includes ``digitalSignature`` and whose extended key
usage includes ``codeSigning``, and checks an RSA PKCS#1 v1.5 SHA-256 signature over the exact
bytes of the part body. ``generate_signing_identity`` makes such a key pair the way Expo's own
tooling does (key usage critical, extended key usage not critical).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SIGNATURE_ALGORITHM = "rsa-v1_5-sha256"
MIN_KEY_SIZE = 2048
KEYID_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


class SigningError(ValueError):
    """A key, certificate or key id that cannot be used for code signing."""


MAX_KEY_FILE_BYTES = 64 * 1024
# The one answer to every refused key file: which rule failed (no such file, not a file,
# outside the directory, readable by others, too large, unreadable) is not told, so the
# field reveals nothing about the server's files.
KEY_FILE_REFUSED = (
    "privateKeyPath must name a PEM file of at most 64 KiB, readable by its owner only "
    "(mode 0600), inside the server's signing-keys directory (LUMORA_SIGNING_KEYS_DIR)"
)


def read_key_file(keys_dir: Path, name: str) -> bytes:
    """The bytes of private-key file ``name`` (relative to ``keys_dir``, or absolute) when it
    is a regular file of at most ``MAX_KEY_FILE_BYTES`` that only its owner may access and
    that lies, every symbolic link followed, inside ``keys_dir``; ``SigningError`` with
    ``KEY_FILE_REFUSED`` otherwise. Mode and size are checked on the opened file, so a file
    swapped in between is refused too, and no more than the limit is ever read."""
    try:
        root = keys_dir.resolve(strict=True)
        path = (root / name).resolve(strict=True)
        if not path.is_relative_to(root):
            raise SigningError(KEY_FILE_REFUSED)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if (
                not stat.S_ISREG(info.st_mode)
                or info.st_mode & 0o077
                or info.st_size > MAX_KEY_FILE_BYTES
            ):
                raise SigningError(KEY_FILE_REFUSED)
            chunks: list[bytes] = []
            size = 0
            while chunk := os.read(fd, MAX_KEY_FILE_BYTES + 1 - size):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_KEY_FILE_BYTES:
                    raise SigningError(KEY_FILE_REFUSED)
            return b"".join(chunks)
        finally:
            os.close(fd)
    except (OSError, ValueError):  # SigningError included: one message for every refusal
        raise SigningError(KEY_FILE_REFUSED) from None


@dataclass(frozen=True)
class SigningIdentity:
    """A parsed, validated key pair, ready to sign."""

    keyid: str
    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    def signature_header(self, body: bytes) -> str:
        """The ``expo-signature`` value for ``body``."""
        return expo_signature_header(sign_rsa_sha256(self.private_key, body), self.keyid)


def generate_private_key(key_size: int = MIN_KEY_SIZE) -> rsa.RSAPrivateKey:
    """A fresh RSA private key of at least 2048 bits."""
    if key_size < MIN_KEY_SIZE:
        raise SigningError(f"RSA keys must have at least {MIN_KEY_SIZE} bits")
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def self_signed_certificate(
    private_key: rsa.RSAPrivateKey, common_name: str, *, valid_days: int = 3650
) -> x509.Certificate:
    """A self-signed code-signing certificate for ``private_key``."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    public_key = private_key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=valid_days))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(private_key, hashes.SHA256())
    )


def private_key_to_pem(private_key: rsa.RSAPrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (the file is written with mode 0600)."""
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificate_to_pem(certificate: x509.Certificate) -> bytes:
    """The certificate as PEM."""
    return certificate.public_bytes(serialization.Encoding.PEM)


def generate_signing_identity(
    common_name: str, *, key_size: int = MIN_KEY_SIZE, valid_days: int = 3650
) -> tuple[bytes, bytes]:
    """A new ``(private_key_pem, certificate_pem)`` pair for code signing."""
    private_key = generate_private_key(key_size)
    certificate = self_signed_certificate(private_key, common_name, valid_days=valid_days)
    return private_key_to_pem(private_key), certificate_to_pem(certificate)


def load_private_key(pem: bytes | str) -> rsa.RSAPrivateKey:
    """Parse an unencrypted PEM RSA private key of at least 2048 bits."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError("the private key is not an unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SigningError("the private key must be an RSA key")
    if key.key_size < MIN_KEY_SIZE:
        raise SigningError(f"the RSA key has {key.key_size} bits; at least {MIN_KEY_SIZE} needed")
    return key


def load_certificate(pem: bytes | str) -> x509.Certificate:
    """Parse a PEM X.509 certificate."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise SigningError("the certificate is not a PEM X.509 certificate") from exc


def is_code_signing_certificate(certificate: x509.Certificate) -> bool:
    """Whether expo-updates accepts ``certificate`` for code signing (key usage
    ``digitalSignature`` and extended key usage ``codeSigning``)."""
    try:
        key_usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        extended = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return key_usage.digital_signature and ExtendedKeyUsageOID.CODE_SIGNING in extended


def validate_keyid(keyid: str) -> str:
    """``keyid`` when it is a safe structured-field string (letters, digits, ``._-``)."""
    if not KEYID_RE.fullmatch(keyid):
        raise SigningError("keyid must be 1-100 characters of letters, digits, '.', '_' or '-'")
    return keyid


def check_validity(certificate: x509.Certificate, now: datetime | None = None) -> None:
    """SigningError unless ``certificate`` is valid at ``now``: expo-updates refuses
    signatures under a certificate outside its validity period."""
    now = now or datetime.now(UTC)
    if now < certificate.not_valid_before_utc:
        start = certificate.not_valid_before_utc.isoformat()
        raise SigningError(f"the certificate is not valid before {start}")
    if now > certificate.not_valid_after_utc:
        raise SigningError(
            f"the certificate expired on {certificate.not_valid_after_utc.isoformat()}"
        )


def load_signing_identity(
    keyid: str,
    private_key_pem: bytes | str,
    certificate_pem: bytes | str,
    *,
    require_valid_now: bool = False,
) -> SigningIdentity:
    """Parse and cross-check a key pair as expo-updates would: RSA >= 2048 bits, a
    code-signing certificate (key usage digitalSignature, extended key usage codeSigning)
    that belongs to the private key and, with ``require_valid_now`` (when a key pair is
    imported), is inside its validity period. Raises SigningError naming what is wrong."""
    private_key = load_private_key(private_key_pem)
    certificate = load_certificate(certificate_pem)
    if certificate.public_key() != private_key.public_key():
        raise SigningError("the certificate does not belong to the private key")
    if not is_code_signing_certificate(certificate):
        raise SigningError(
            "the certificate needs key usage digitalSignature and extended key usage codeSigning"
        )
    if require_valid_now:
        check_validity(certificate)
    return SigningIdentity(validate_keyid(keyid), private_key, certificate)


def sign_rsa_sha256(private_key: rsa.RSAPrivateKey, body: bytes) -> str:
    """Base64 RSA PKCS#1 v1.5 SHA-256 signature of ``body``."""
    signature = private_key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify_rsa_sha256(certificate: x509.Certificate, body: bytes, signature_b64: str) -> bool:
    """Whether ``signature_b64`` signs ``body`` under the certificate's key."""
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        return False
    try:
        public_key.verify(
            base64.b64decode(signature_b64), body, padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def _sf_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def expo_signature_header(signature_b64: str, keyid: str) -> str:
    """The ``expo-signature`` structured-field dictionary:
    ``sig="...", keyid="...", alg="rsa-v1_5-sha256"``."""
    return (
        f"sig={_sf_string(signature_b64)}, keyid={_sf_string(keyid)}, "
        f"alg={_sf_string(SIGNATURE_ALGORITHM)}"
    )


class Signer(Protocol):
    """What signs device bodies: a ``SigningIdentity`` (server-held key) or a
    ``PublisherIdentity`` (the publisher's stored signatures)."""

    @property
    def keyid(self) -> str:
        """The ``keyid`` of its signatures."""
        ...

    def signature_header(self, body: bytes) -> str:
        """The ``expo-signature`` value for ``body``."""
        ...


class UnsignedBody(SigningError):
    """A body the publisher has not signed (publisher-held mode): it must not be served."""


def body_sha256(body: bytes) -> str:
    """Hex SHA-256 of a device body: what publisher signatures are looked up by."""
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class PublisherIdentity:
    """A project whose publisher holds the private key (issue 20): the server has the
    certificate and the publisher's signatures by body SHA-256, never the key. ``timestamp``
    is the server's online key that signs freshness statements only (TUF's timestamp role)."""

    keyid: str
    certificate: x509.Certificate
    signatures: Mapping[str, str]  # hex SHA-256 of a body -> base64 signature
    timestamp: SigningIdentity | None = None

    def signs(self, body: bytes) -> bool:
        """Whether the publisher signed exactly these bytes."""
        return body_sha256(body) in self.signatures

    def signature_header(self, body: bytes) -> str:
        """The publisher's ``expo-signature`` for ``body``; ``UnsignedBody`` without one."""
        signature = self.signatures.get(body_sha256(body))
        if signature is None:
            raise UnsignedBody("the publisher has not signed this body")
        return expo_signature_header(signature, self.keyid)


def parse_signature_value(value: str) -> str:
    """The base64 signature of an ``expo-signature`` value (``sig="..."``) or of a bare
    base64 signature; ``SigningError`` when it is neither."""
    match = re.search(r'sig="([A-Za-z0-9+/=]+)"', value)
    raw = match.group(1) if match else value.strip()
    try:
        if not raw or len(base64.b64decode(raw, validate=True)) < MIN_KEY_SIZE // 8:
            raise ValueError
    except ValueError:
        raise SigningError("the signature is not base64 RSA signature bytes") from None
    return raw


def validate_publisher_certificate(certificate_pem: bytes | str) -> x509.Certificate:
    """The certificate of a publisher-held key, checked as expo-updates would (RSA >= 2048
    bits, digitalSignature + codeSigning, valid now); ``SigningError`` naming the problem."""
    certificate = load_certificate(certificate_pem)
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise SigningError("the certificate's key must be an RSA key")
    if public_key.key_size < MIN_KEY_SIZE:
        raise SigningError(f"the RSA key has {public_key.key_size} bits; at least 2048 needed")
    if not is_code_signing_certificate(certificate):
        raise SigningError(
            "the certificate needs key usage digitalSignature and extended key usage codeSigning"
        )
    check_validity(certificate)
    return certificate
