"""The Expo Updates v1 endpoint against real servers: the golden fixture, negotiation, errors,
directives, channels and code signing."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from device_helpers import (
    EXPO_ACCEPT,
    enable_signing,
    expo_get,
    new_project,
    parse_multipart,
    publish_small,
)
from harness import ServerProcess, publish_export
from lumora_ota.signing import generate_signing_identity

GOLDEN_HASHES = {
    "png": "JCcs2u_4LMX6zazNmCpvBbYMRQRwS7-UwZpjiGWYgLs",
    "ios": "4nGjshgRoD62YxnJAnZBWllEzCBrQR2zQ_2ei8glL6s",
    "android": "t3kWQ00Lhn5qCGGhNNMxiD_pcTO_4d7I_1zO3S5Me5k",
}
REQUIRED_HEADERS = {
    "expo-protocol-version": "1",
    "expo-sfv-version": "0",
    "cache-control": "private, max-age=0",
}
SIG_RE = re.compile(r'^sig="([A-Za-z0-9+/=]+)", keyid="([^"]+)", alg="rsa-v1_5-sha256"$')


def b64url_sha256(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def assert_required_headers(resp: Any) -> None:
    for name, value in REQUIRED_HEADERS.items():
        assert resp.headers[name] == value, name
    assert "expo-manifest-filters" in resp.headers
    assert "expo-server-defined-headers" in resp.headers


def assert_problem(resp: Any, status: int) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["status"] == status


@pytest.fixture(scope="module")
def golden(server: ServerProcess, fixtures_dir: Path) -> dict[str, Any]:
    """The 1674170951 export published through the management API to a fresh project."""
    slug = new_project(server, uuid.uuid4().hex[:8], "golden")
    with server.client() as client:
        answer, _ = publish_export(client, slug, fixtures_dir / "expo-export-1674170951")
    by_platform = {u["platform"]: u for u in answer["updates"]}
    return {"slug": slug, "updates": by_platform, "projectId": by_platform["ios"]["projectId"]}


@pytest.fixture(scope="module")
def signing_pair() -> tuple[bytes, bytes]:
    return generate_signing_identity("lumora-test")


# ---------------------------------------------------------------- golden


@pytest.mark.parametrize("platform", ["ios", "android"])
def test_golden_manifest(server: ServerProcess, golden: dict[str, Any], platform: str) -> None:
    resp = expo_get(server, golden["slug"], platform=platform, accept=EXPO_ACCEPT)
    assert resp.status_code == 200, resp.text
    assert_required_headers(resp)
    parts = parse_multipart(resp)
    assert set(parts) == {"manifest", "extensions"}
    manifest_part = parts["manifest"]
    assert manifest_part.headers["content-type"] == "application/json"
    assert manifest_part.headers["content-disposition"] == 'inline; name="manifest"'
    manifest = json.loads(manifest_part.body)

    assert str(uuid.UUID(manifest["id"])) == manifest["id"]
    assert manifest["id"] == golden["updates"][platform]["id"]
    assert manifest["runtimeVersion"] == "1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", manifest["createdAt"])
    assert manifest["launchAsset"]["hash"] == GOLDEN_HASHES[platform]
    assert manifest["launchAsset"]["contentType"] == "application/javascript"
    assert len(manifest["assets"]) == 1
    (png,) = manifest["assets"]
    assert png["hash"] == GOLDEN_HASHES["png"]
    assert png["fileExtension"] == ".png"
    assert png["contentType"] == "image/png"
    assert manifest["metadata"] == {}
    assert manifest["extra"]["expoClient"]["runtimeVersion"] == "1"
    assert manifest["extra"]["expoClient"]["slug"] == "expo-updates-client"

    with server.anon() as client:
        for asset in (manifest["launchAsset"], png):
            got = client.get(asset["url"], headers={"accept-encoding": "identity"})
            assert got.status_code == 200
            assert b64url_sha256(got.content) == asset["hash"]

    extensions = json.loads(parts["extensions"].body)
    keys = {manifest["launchAsset"]["key"], png["key"]}
    assert set(extensions["assetRequestHeaders"]) == keys


def test_golden_platforms_have_different_ids(server: ServerProcess, golden: dict[str, Any]) -> None:
    ids = {
        json.loads(parse_multipart(expo_get(server, golden["slug"], platform=p))["manifest"].body)[
            "id"
        ]
        for p in ("ios", "android")
    }
    assert len(ids) == 2


@pytest.mark.parametrize("accept", ["application/expo+json", "application/json"])
def test_json_only_answer_is_the_manifest(
    server: ServerProcess, golden: dict[str, Any], accept: str
) -> None:
    resp = expo_get(server, golden["projectId"], accept=accept)  # by id this time
    assert resp.status_code == 200
    assert_required_headers(resp)
    assert resp.headers["content-type"].split(";")[0] == accept
    assert resp.json()["launchAsset"]["hash"] == GOLDEN_HASHES["ios"]


def test_accept_q_values_choose_the_structure(
    server: ServerProcess, golden: dict[str, Any]
) -> None:
    resp = expo_get(server, golden["slug"], accept="multipart/mixed;q=0.5, application/json")
    assert resp.headers["content-type"].split(";")[0] == "application/json"
    resp = expo_get(server, golden["slug"], accept="application/json;q=0.1, multipart/*")
    assert resp.headers["content-type"].startswith("multipart/mixed")


# ---------------------------------------------------------------- request errors


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"platform": "web"}, 400),
        ({"platform": "windows"}, 400),
        ({"platform": ""}, 400),
        ({"runtime_version": ""}, 400),
        ({"protocol": "2"}, 400),
        ({"protocol": "one"}, 400),
        ({"accept": "text/html"}, 406),
        ({"accept": "application/xml, text/*"}, 406),
        ({"accept": "multipart/mixed;q=0, application/json;q=0"}, 406),
    ],
)
def test_bad_requests_are_problems(
    server: ServerProcess, golden: dict[str, Any], headers: dict[str, str], status: int
) -> None:
    assert_problem(expo_get(server, golden["slug"], **headers), status)


def test_missing_headers_are_400(server: ServerProcess, golden: dict[str, Any]) -> None:
    url = f"/api/v1/expo/{golden['slug']}/manifest"
    with server.anon() as client:
        assert_problem(client.get(url, headers={"expo-runtime-version": "1"}), 400)
        assert_problem(client.get(url, headers={"expo-platform": "ios"}), 400)


def test_unknown_project_is_404(server: ServerProcess) -> None:
    assert_problem(expo_get(server, "no-such-project-" + uuid.uuid4().hex[:6]), 404)


# ---------------------------------------------------------------- directives and channels


def test_device_on_the_served_update(server: ServerProcess, golden: dict[str, Any]) -> None:
    current = golden["updates"]["ios"]["id"]
    resp = expo_get(server, golden["slug"], expo_current_update_id=current)
    assert resp.status_code == 200
    assert_required_headers(resp)
    parts = parse_multipart(resp)
    assert set(parts) == {"directive"}
    assert parts["directive"].headers["content-type"] == "application/json"
    assert json.loads(parts["directive"].body) == {"type": "noUpdateAvailable"}
    # Ids are compared case-insensitively (iOS spells UUIDs in upper case).
    resp = expo_get(server, golden["slug"], expo_current_update_id=current.upper())
    assert set(parse_multipart(resp)) == {"directive"}
    # Protocol 0 has no directives: the manifest again.
    resp = expo_get(server, golden["slug"], protocol=None, expo_current_update_id=current)
    assert resp.status_code == 200
    assert resp.headers["expo-protocol-version"] == "0"
    assert json.loads(parse_multipart(resp)["manifest"].body)["id"] == current


def test_nothing_eligible(server: ServerProcess, golden: dict[str, Any]) -> None:
    resp = expo_get(server, golden["slug"], runtime_version="99")
    assert resp.status_code == 200
    assert json.loads(parse_multipart(resp)["directive"].body)["type"] == "noUpdateAvailable"
    resp = expo_get(server, golden["slug"], runtime_version="99", protocol="0")
    assert resp.status_code == 204 and resp.content == b""
    resp = expo_get(server, golden["slug"], runtime_version="99", accept="application/expo+json")
    assert resp.status_code == 204
    assert_required_headers(resp)


def test_channel_defaults_to_production(server: ServerProcess, unique: str, tmp_path: Path) -> None:
    slug = new_project(server, unique)
    prod = publish_small(server, slug, tmp_path, channel="production")
    staging = publish_small(server, slug, tmp_path, channel="staging")

    def served(**headers: str) -> str:
        resp = expo_get(server, slug, **headers)
        return str(json.loads(parse_multipart(resp)["manifest"].body)["id"])

    assert served() == prod["ios"]["id"]
    assert served(expo_channel_name="production") == prod["ios"]["id"]
    assert served(expo_channel_name="staging") == staging["ios"]["id"]
    resp = expo_get(server, slug, expo_channel_name="nope")
    assert json.loads(parse_multipart(resp)["directive"].body)["type"] == "noUpdateAvailable"


def test_rollback_to_embedded_directive(server: ServerProcess, unique: str, tmp_path: Path) -> None:
    slug = new_project(server, unique)
    first = publish_small(server, slug, tmp_path)["android"]
    with server.client() as client:
        resp = client.post(f"/api/v1/updates/{first['id']}/rollback", json={"toEmbedded": True})
    assert resp.status_code in (200, 201), resp.text
    marker = resp.json()

    resp = expo_get(
        server, slug, platform="android", expo_current_update_id=first["id"],
        expo_embedded_update_id="embedded-1",
    )  # fmt: skip
    assert resp.status_code == 200
    directive = json.loads(parse_multipart(resp)["directive"].body)
    assert directive == {
        "type": "rollBackToEmbedded",
        "parameters": {"commitTime": marker["createdAt"]},
    }
    # Already on the embedded update: nothing to do.
    resp = expo_get(
        server, slug, platform="android", expo_current_update_id="embedded-1",
        expo_embedded_update_id="embedded-1",
    )  # fmt: skip
    assert json.loads(parse_multipart(resp)["directive"].body)["type"] == "noUpdateAvailable"
    # A directive cannot be expressed as a bare manifest, nor in protocol 0.
    assert_problem(expo_get(server, slug, platform="android", accept="application/json"), 406)
    assert_problem(expo_get(server, slug, platform="android", protocol="0"), 406)
    # iOS was not rolled back.
    resp = expo_get(server, slug, platform="ios")
    assert "manifest" in parse_multipart(resp)


def test_recent_failed_updates_are_skipped(
    server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    slug = new_project(server, unique)
    older = publish_small(server, slug, tmp_path)["ios"]
    newer = publish_small(server, slug, tmp_path)["ios"]
    resp = expo_get(server, slug, expo_recent_failed_update_ids=f'"{newer["id"]}"')
    assert json.loads(parse_multipart(resp)["manifest"].body)["id"] == older["id"]


# ---------------------------------------------------------------- code signing


def verify(cert_pem: bytes, body: bytes, header: str) -> None:
    match = SIG_RE.fullmatch(header)
    assert match is not None, header
    assert match.group(2) == "main"
    cert = x509.load_pem_x509_certificate(cert_pem)
    key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert key_usage.digital_signature
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CODE_SIGNING in eku
    public_key = cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size >= 2048
    public_key.verify(base64.b64decode(match.group(1)), body, padding.PKCS1v15(), hashes.SHA256())


def test_signed_manifests_and_directives(
    server: ServerProcess,
    unique: str,
    tmp_path: Path,
    signing_pair: tuple[bytes, bytes],
) -> None:
    slug = new_project(server, unique)
    first = publish_small(server, slug, tmp_path)["ios"]
    expect = 'sig, keyid="main", alg="rsa-v1_5-sha256"'
    # Expected but not configured: a clear 400.
    assert_problem(expo_get(server, slug, expo_expect_signature=expect), 400)
    enable_signing(server, slug, signing_pair)
    _, cert_pem = signing_pair

    resp = expo_get(server, slug, expo_expect_signature=expect)
    manifest = parse_multipart(resp)["manifest"]
    verify(cert_pem, manifest.body, manifest.headers["expo-signature"])
    assert "expo-signature" not in parse_multipart(resp)["extensions"].headers

    resp = expo_get(server, slug, accept="application/expo+json", expo_expect_signature=expect)
    verify(cert_pem, resp.content, resp.headers["expo-signature"])

    resp = expo_get(server, slug, expo_expect_signature=expect, expo_current_update_id=first["id"])
    directive = parse_multipart(resp)["directive"]
    verify(cert_pem, directive.body, directive.headers["expo-signature"])

    with server.client() as client:
        rb = client.post(f"/api/v1/updates/{first['id']}/rollback", json={"toEmbedded": True})
    assert rb.status_code in (200, 201), rb.text
    resp = expo_get(server, slug, expo_expect_signature=expect)
    directive = parse_multipart(resp)["directive"]
    assert json.loads(directive.body)["type"] == "rollBackToEmbedded"
    verify(cert_pem, directive.body, directive.headers["expo-signature"])

    # Unsigned requests stay unsigned.
    resp = expo_get(server, slug)
    assert "expo-signature" not in parse_multipart(resp)["directive"].headers


def test_cors_preflight_for_web_clients(server: ServerProcess, golden: dict[str, Any]) -> None:
    with server.anon() as client:
        resp = client.options(
            f"/api/v1/expo/{golden['slug']}/manifest",
            headers={
                "origin": "https://web.example",
                "access-control-request-method": "GET",
                "access-control-request-headers": "expo-platform, expo-runtime-version",
            },
        )
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] in ("*", "https://web.example")
    allowed = resp.headers["access-control-allow-headers"].lower()
    assert "expo-platform" in allowed and "expo-runtime-version" in allowed
    resp = expo_get(server, golden["slug"], origin="https://web.example")
    assert "expo-signature" in resp.headers["access-control-expose-headers"]
