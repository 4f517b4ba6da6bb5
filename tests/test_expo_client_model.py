"""The client model checked against expo-updates' own unit tests.

Cases ported (inputs and expected answers, not code) from expo/expo
``packages/expo-updates/android/src/test/java/expo/modules/updates/``:
``selectionpolicy/LauncherSelectionPolicyFilterAwareTest.kt``,
``selectionpolicy/LoaderSelectionPolicyFilterAwareTest.kt``,
``loader/FileDownloaderManifestParsingTest.kt`` and the certificate rules that
``codesigning/CertificateFixtures.kt`` exercises (our own certificates stand in for theirs).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from expo_client_model import (
    CodeSigning,
    ModelError,
    Part,
    StoredUpdate,
    check_file_name,
    parse_answer,
    parse_time,
    select_update_to_launch,
    should_load_new_update,
    should_load_rollback_to_embedded,
    validate_code_signing_certificate,
)

FILTERS = {"branchname": "default"}


def update(uid: str, created: str, *, rv: str = "1.0", branch: str = "default") -> StoredUpdate:
    return StoredUpdate(
        id=uid,
        commit_time=parse_time(created),
        runtime_version=rv,
        launch_key="0436e5821bff7b95a84c21f22a43cb96.bundle",
        asset_keys=("3261e570d51777be1e99116562280926.png",),
        metadata={"branchName": branch},
    )


DEFAULT_1 = update("079cde35-8433-4c17-81c8-7117c1513e72", "2021-01-11T19:39:22.480Z")
NEWER = update("079cde35-8433-4c17-81c8-7117c1513e76", "2021-01-15T19:39:22.480Z")
LATEST = update("079cde35-8433-4c17-81c8-7117c1513e77", "2025-01-15T19:39:22.480Z")
OTHER_BRANCH = update(
    "079cde35-8433-4c17-81c8-7117c1513e78", "2021-01-16T19:39:22.480Z", branch="somethingNew"
)


# ---------------------------------------------------------------- launcher


def test_launcher_picks_the_latest_commit_time() -> None:
    assert select_update_to_launch([NEWER, DEFAULT_1, LATEST], "1.0", FILTERS) is LATEST


def test_launcher_ignores_other_runtime_versions_and_filters() -> None:
    other_rv = update("a", "2030-01-01T00:00:00.000Z", rv="2.0")
    assert select_update_to_launch([DEFAULT_1, other_rv], "1.0", FILTERS) is DEFAULT_1
    assert select_update_to_launch([DEFAULT_1, OTHER_BRANCH], "1.0", FILTERS) is DEFAULT_1
    assert select_update_to_launch([other_rv], "1.0", FILTERS) is None


def test_launcher_skips_failed_updates() -> None:
    failed = update("f", "2030-01-01T00:00:00.000Z")
    failed.failed = True
    assert select_update_to_launch([DEFAULT_1, failed], "1.0") is DEFAULT_1


# ---------------------------------------------------------------- loader


def test_loader_loads_a_newer_update() -> None:
    assert should_load_new_update(NEWER, DEFAULT_1, FILTERS)


def test_loader_does_not_load_the_same_update() -> None:
    assert not should_load_new_update(NEWER, NEWER, FILTERS)


def test_loader_does_not_load_an_older_update() -> None:
    """The rule that makes a rollback need a new createdAt."""
    assert not should_load_new_update(DEFAULT_1, NEWER, FILTERS)


def test_loader_refuses_an_update_failing_its_filters() -> None:
    assert not should_load_new_update(OTHER_BRANCH, DEFAULT_1, FILTERS)


def test_loader_replaces_a_launched_update_that_fails_the_filters() -> None:
    assert should_load_new_update(DEFAULT_1, OTHER_BRANCH, FILTERS)
    assert should_load_new_update(DEFAULT_1, None, FILTERS)
    assert not should_load_new_update(None, DEFAULT_1, FILTERS)


def test_roll_back_to_embedded_needs_a_newer_commit_time() -> None:
    embedded = update("e", "2020-01-01T00:00:00.000Z")
    later = parse_time("2021-02-01T00:00:00.000Z")
    earlier = parse_time("2021-01-01T00:00:00.000Z")
    assert should_load_rollback_to_embedded(later, embedded, NEWER, FILTERS)
    assert not should_load_rollback_to_embedded(earlier, embedded, NEWER, FILTERS)
    assert should_load_rollback_to_embedded(earlier, embedded, None, FILTERS)
    assert should_load_rollback_to_embedded(earlier, embedded, OTHER_BRANCH, FILTERS)
    other = update("e2", "2020-01-01T00:00:00.000Z", branch="somethingNew")
    assert not should_load_rollback_to_embedded(later, other, NEWER, FILTERS)


# ---------------------------------------------------------------- manifest parsing


MANIFEST = {
    "id": "0754dad0-d200-d634-113c-ef1f26106028",
    "createdAt": "2021-11-23T00:57:14.437Z",
    "runtimeVersion": "1",
    "assets": [
        {
            "hash": "cb65fafb5ed456fc3ed8a726cf4087d37b875184eba96f33f6d99104e6e2266d",
            "key": "489ea2f19fa850b65653ab445637a181.jpg",
            "contentType": "image/jpeg",
            "url": "https://url.to/asset",
            "fileExtension": ".jpg",
        }
    ],
    "launchAsset": {
        "hash": "323ddd1968ee76d4ddbb16b04fb2c3f1b6d1ab9b637d819699fecd6fa0ffb1a8",
        "key": "696a70cf7035664c20ea86f67dae822b.bundle",
        "contentType": "application/javascript",
        "url": "https://url.to/bundle",
        "fileExtension": ".bundle",
    },
    "extra": {"scopeKey": "@test/app"},
}
NO_UPDATE = b'{"type":"noUpdateAvailable"}'


def multipart(*parts: tuple[str, bytes, dict[str, str]]) -> tuple[dict[str, str], bytes]:
    boundary = "blah"
    chunks = []
    for name, body, headers in parts:
        head = f'content-disposition: form-data; name="{name}"; filename="x"\r\n'
        head += "content-type: application/json; charset=utf-8\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        chunks.append(f"--{boundary}\r\n{head}\r\n".encode() + body + b"\r\n")
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    return {"content-type": f"multipart/mixed; boundary={boundary}"}, body


def test_parsing_json_body() -> None:
    answer = parse_answer(200, {"expo-protocol-version": "0"}, json.dumps(MANIFEST).encode())
    assert answer.manifest is not None and answer.directive is None


def test_parsing_multipart_with_extraneous_parts() -> None:
    headers, body = multipart(
        ("extraneous", b"hello", {}),
        ("manifest", json.dumps(MANIFEST).encode(), {}),
        ("extensions", b"{}", {}),
        ("directive", NO_UPDATE, {}),
    )
    answer = parse_answer(200, headers, body)
    assert answer.manifest is not None and json.loads(answer.manifest.body) == MANIFEST
    assert answer.directive is not None and json.loads(answer.directive.body)["type"] == (
        "noUpdateAvailable"
    )


def test_parsing_multipart_only_directive_and_no_relevant_parts() -> None:
    only = parse_answer(200, *multipart(("directive", NO_UPDATE, {})))
    assert only.manifest is None and only.directive is not None
    none = parse_answer(200, *multipart(("fake", b"", {})))
    assert none.manifest is None and none.directive is None


def test_parsing_empty_bodies() -> None:
    empty = parse_answer(200, {"content-type": "multipart/mixed; boundary=blah"}, b"")
    assert empty.manifest is None and empty.directive is None
    no_content = parse_answer(204, {"expo-protocol-version": "1"}, b"")
    assert no_content.manifest is None and no_content.directive is None
    with pytest.raises(ModelError, match="Empty body"):
        parse_answer(204, {}, b"")


@pytest.mark.parametrize(
    ("key", "extension"),
    [("../../shared_prefs/pwned", ".xml"), ("image", ".png/../../pwned"), ("a\\b", ".png")],
)
def test_asset_names_may_not_escape_the_updates_directory(key: str, extension: str) -> None:
    with pytest.raises(ModelError):
        check_file_name(key, extension)


def test_asset_keys_may_start_with_dots() -> None:
    check_file_name("..hidden", ".png")


# ---------------------------------------------------------------- code signing


def certificate(
    key: rsa.RSAPrivateKey,
    *,
    code_signing: bool = True,
    digital_signature: bool = True,
    not_after: datetime | None = None,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "model test")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=2))
        .not_valid_after(not_after or now + timedelta(days=365))
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=False,
                key_encipherment=not digital_signature,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if code_signing:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
    return builder.sign(key, hashes.SHA256())


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def signed_part(key: rsa.RSAPrivateKey, body: bytes, keyid: str = "main") -> Part:
    sig = base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()
    header = f'sig="{sig}", keyid="{keyid}", alg="rsa-v1_5-sha256"'
    return Part("manifest", {"expo-signature": header}, body)


def test_signed_manifest_verifies(key: rsa.RSAPrivateKey) -> None:
    body = json.dumps(MANIFEST).encode()
    assert CodeSigning(certificate(key), keyid="main").verify(signed_part(key, body))


def test_signature_over_other_bytes_fails(key: rsa.RSAPrivateKey) -> None:
    part = signed_part(key, b'{"a":1}')
    part.body = b'{"a": 1}'
    with pytest.raises(ModelError, match="verification failed"):
        CodeSigning(certificate(key), keyid="main").verify(part)


def test_unsigned_manifest_fails_unless_allowed(key: rsa.RSAPrivateKey) -> None:
    part = Part("manifest", {}, json.dumps(MANIFEST).encode())
    with pytest.raises(ModelError, match="no signature"):
        CodeSigning(certificate(key)).verify(part)
    assert CodeSigning(certificate(key), allow_unsigned=True).verify(part) is False


def test_keyid_must_match(key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ModelError, match="keyid"):
        CodeSigning(certificate(key), keyid="root").verify(signed_part(key, b"{}", "main"))


def test_certificate_rules(key: rsa.RSAPrivateKey) -> None:
    validate_code_signing_certificate(certificate(key))
    with pytest.raises(ModelError, match="codeSigning"):
        validate_code_signing_certificate(certificate(key, code_signing=False))
    with pytest.raises(ModelError, match="digitalSignature"):
        validate_code_signing_certificate(certificate(key, digital_signature=False))
    expired = certificate(key, not_after=datetime.now(UTC) - timedelta(days=1))
    with pytest.raises(ModelError, match="not valid"):
        validate_code_signing_certificate(expired)


def test_the_real_tools_certificate_passes(fixtures_dir: Path) -> None:
    pem = (fixtures_dir / "expo-codesigning" / "certificate.pem").read_bytes()
    validate_code_signing_certificate(x509.load_pem_x509_certificate(pem))
