"""Keys, code-signing certificates and the expo-signature header."""

from __future__ import annotations

import base64
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from lumora_ota.signing import (
    SigningError,
    certificate_to_pem,
    expo_signature_header,
    generate_private_key,
    generate_signing_identity,
    load_certificate,
    load_private_key,
    load_signing_identity,
    private_key_to_pem,
    self_signed_certificate,
    sign_rsa_sha256,
    verify_rsa_sha256,
)

HEADER_RE = re.compile(r'^sig="([A-Za-z0-9+/=]+)", keyid="([^"]*)", alg="rsa-v1_5-sha256"$')


@pytest.fixture(scope="module")
def identity() -> tuple[bytes, bytes]:
    return generate_signing_identity("Lumora test")


def test_generated_certificate_is_a_self_signed_code_signing_certificate(
    identity: tuple[bytes, bytes],
) -> None:
    key_pem, cert_pem = identity
    key = load_private_key(key_pem)
    cert = load_certificate(cert_pem)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048
    assert cert.public_key() == key.public_key()
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)  # self-signed
    key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert key_usage.critical and key_usage.value.digital_signature
    assert not key_usage.value.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CODE_SIGNING in eku
    assert cert.not_valid_after_utc > cert.not_valid_before_utc


def test_signature_verifies_with_cryptography(identity: tuple[bytes, bytes]) -> None:
    key_pem, cert_pem = identity
    body = b'{"id":"x","runtimeVersion":"1"}'
    sig = sign_rsa_sha256(load_private_key(key_pem), body)
    public_key = load_certificate(cert_pem).public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(base64.b64decode(sig), body, padding.PKCS1v15(), hashes.SHA256())
    assert verify_rsa_sha256(load_certificate(cert_pem), body, sig)
    assert not verify_rsa_sha256(load_certificate(cert_pem), body + b" ", sig)


def test_expo_signature_header_shape(identity: tuple[bytes, bytes]) -> None:
    key_pem, cert_pem = identity
    ident = load_signing_identity("main", key_pem, cert_pem)
    header = ident.signature_header(b"{}")
    match = HEADER_RE.fullmatch(header)
    assert match is not None and match.group(2) == "main"
    assert verify_rsa_sha256(ident.certificate, b"{}", match.group(1))
    assert expo_signature_header("abc", 'we"ird') == (
        'sig="abc", keyid="we\\"ird", alg="rsa-v1_5-sha256"'
    )


def test_key_and_certificate_must_belong_together(identity: tuple[bytes, bytes]) -> None:
    key_pem, _ = identity
    _, other_cert = generate_signing_identity("other")
    with pytest.raises(SigningError, match="does not belong"):
        load_signing_identity("main", key_pem, other_cert)


def test_small_and_non_rsa_keys_are_refused() -> None:
    with pytest.raises(SigningError):
        generate_private_key(1024)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(SigningError, match="at least 2048"):
        load_private_key(private_key_to_pem(small))  # type: ignore[arg-type]
    ec_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(SigningError, match="RSA"):
        load_private_key(private_key_to_pem(ec_key))  # type: ignore[arg-type]


def test_garbage_is_refused(identity: tuple[bytes, bytes]) -> None:
    key_pem, cert_pem = identity
    with pytest.raises(SigningError):
        load_private_key(b"not a key")
    with pytest.raises(SigningError):
        load_certificate("not a certificate")
    with pytest.raises(SigningError, match="keyid"):
        load_signing_identity('bad"id', key_pem, cert_pem)


def test_certificate_without_code_signing_usage_is_refused() -> None:
    key = generate_private_key()
    template = self_signed_certificate(key, "x")
    plain = (
        x509.CertificateBuilder()
        .subject_name(template.subject)
        .issuer_name(template.issuer)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(template.not_valid_before_utc)
        .not_valid_after(template.not_valid_after_utc)
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(SigningError, match="codeSigning"):
        load_signing_identity("main", private_key_to_pem(key), certificate_to_pem(plain))
