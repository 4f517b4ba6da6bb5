"""PUT/GET/DELETE /api/v1/projects/{project}/signing against real servers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from device_helpers import expo_get, new_project, parse_multipart, publish_small
from harness import ServerProcess
from lumora_ota.signing import (
    certificate_to_pem,
    generate_signing_identity,
    private_key_to_pem,
    self_signed_certificate,
)


@pytest.fixture(scope="module")
def pair() -> tuple[bytes, bytes]:
    return generate_signing_identity("api-test")


def put(server: ServerProcess, slug: str, body: dict[str, Any], key: str | None = None) -> Any:
    with server.client(key) as client:
        return client.put(f"/api/v1/projects/{slug}/signing", json=body)


def pem_body(pair: tuple[bytes, bytes], keyid: str = "main") -> dict[str, Any]:
    return {"keyid": keyid, "privateKeyPem": pair[0].decode(), "certificatePem": pair[1].decode()}


def test_lifecycle(
    server: ServerProcess, unique: str, pair: tuple[bytes, bytes], tmp_path: Path
) -> None:
    slug = new_project(server, unique, "sig")
    publish_small(server, slug, tmp_path)
    with server.client() as client:
        assert client.get(f"/api/v1/projects/{slug}/signing").json() == {"enabled": False}
    resp = put(server, slug, pem_body(pair, "release-1"))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"keyid": "release-1", "certificatePem": pair[1].decode()}
    with server.client() as client:
        got = client.get(f"/api/v1/projects/{slug}/signing").json()
    assert got["enabled"] is True and got["keyid"] == "release-1"
    assert got["certificatePem"] == pair[1].decode()
    assert "PRIVATE" not in str(got)

    signed = expo_get(server, slug, expo_expect_signature="sig")
    assert 'keyid="release-1"' in parse_multipart(signed)["manifest"].headers["expo-signature"]

    with server.client() as client:
        assert client.delete(f"/api/v1/projects/{slug}/signing").json() == {"enabled": False}
        assert client.get(f"/api/v1/projects/{slug}/signing").json() == {"enabled": False}
    assert expo_get(server, slug, expo_expect_signature="sig").status_code == 400


def test_unusable_key_pairs_are_refused(
    server: ServerProcess, unique: str, pair: tuple[bytes, bytes]
) -> None:
    slug = new_project(server, unique, "sigbad")
    _, other_cert = generate_signing_identity("other")
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    small_pem = private_key_to_pem(small).decode()
    small_cert = certificate_to_pem(self_signed_certificate(small, "small")).decode()
    cases = [
        {**pem_body(pair), "certificatePem": other_cert.decode()},
        {**pem_body(pair), "privateKeyPem": "garbage"},
        {**pem_body(pair), "certificatePem": "garbage"},
        {"keyid": "main", "privateKeyPem": small_pem, "certificatePem": small_cert},
        {"keyid": "main", "certificatePem": pair[1].decode()},  # no private key at all
        {**pem_body(pair), "privateKeyPath": "/etc/hostname"},  # both forms
    ]
    for body in cases:
        resp = put(server, slug, body)
        assert resp.status_code == 400, (body.keys(), resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
    for body in ({**pem_body(pair), "keyid": 'bad"id'}, {**pem_body(pair), "extra": 1}):
        assert put(server, slug, body).status_code == 422
    with server.client() as client:
        assert client.get(f"/api/v1/projects/{slug}/signing").json() == {"enabled": False}


def test_private_key_file_must_be_owner_only(
    server: ServerProcess, unique: str, pair: tuple[bytes, bytes], tmp_path: Path
) -> None:
    slug = new_project(server, unique, "sigfile")
    keys_dir = server.data_dir / "signing-keys"  # the default LUMORA_SIGNING_KEYS_DIR
    keys_dir.mkdir(mode=0o700, exist_ok=True)
    key_file = keys_dir / f"private-key-{unique}.pem"
    key_file.write_bytes(pair[0])
    body = {"keyid": "main", "privateKeyPath": str(key_file), "certificatePem": pair[1].decode()}
    os.chmod(key_file, 0o644)
    assert put(server, slug, body).status_code == 400
    assert put(server, slug, {**body, "privateKeyPath": "relative.pem"}).status_code == 400
    os.chmod(key_file, 0o600)
    assert put(server, slug, body).status_code == 200
    with server.client() as client:
        got = client.get(f"/api/v1/projects/{slug}/signing").json()
    assert got["privateKeySource"] == "file"
    # The key is read from the file when manifests are signed.
    publish_small(server, slug, tmp_path)
    signed = expo_get(server, slug, expo_expect_signature="sig")
    assert 'keyid="main"' in parse_multipart(signed)["manifest"].headers["expo-signature"]


def test_roles_and_scopes(server: ServerProcess, unique: str, pair: tuple[bytes, bytes]) -> None:
    slug = new_project(server, unique, "sigrole")
    other = new_project(server, unique, "sigother")
    with server.client() as client:
        project_id = client.get(f"/api/v1/projects/{slug}").json()["id"]
        read_key = client.post(
            "/api/v1/keys", json={"name": "r", "role": "read", "project": slug}
        ).json()["key"]
        foreign_key = client.post(
            "/api/v1/keys", json={"name": "f", "role": "admin", "project": other}
        ).json()["key"]
    assert put(server, slug, pem_body(pair), key=read_key).status_code == 403
    with server.client(read_key) as client:
        assert client.get(f"/api/v1/projects/{project_id}/signing").status_code == 200
        assert client.delete(f"/api/v1/projects/{slug}/signing").status_code == 403
    assert put(server, slug, pem_body(pair), key=foreign_key).status_code == 404
    with server.anon() as client:
        assert client.get(f"/api/v1/projects/{slug}/signing").status_code == 401
