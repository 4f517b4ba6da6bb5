"""POST /api/v1/updates/check (the Lumora JSON API) against real servers."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from device_helpers import enable_signing, in_process_app, new_project, publish_small
from harness import ServerProcess, create_project, make_export, publish_export
from lumora_ota.domain.rollout import in_rollout
from lumora_ota.signing import generate_signing_identity


def check(server: ServerProcess, **body: Any) -> Any:
    payload = {"platform": "ios", "runtimeVersion": "1", **body}
    with server.anon() as client:
        return client.post("/api/v1/updates/check", json=payload)


@pytest.fixture
def project(server: ServerProcess, unique: str) -> str:
    return new_project(server, unique, "chk")


def test_update_available_with_lumora_fields(
    server: ServerProcess, project: str, tmp_path: Path
) -> None:
    ios = publish_small(server, project, tmp_path, message="fix login")["ios"]
    resp = check(server, projectId=project)
    assert resp.status_code == 200
    body = resp.json()
    assert body["updateAvailable"] is True and body["isMandatory"] is False
    assert body["message"] == "fix login"
    manifest = body["manifest"]
    assert manifest["id"] == ios["id"]
    assert manifest["runtimeVersion"] == "1"
    launch = manifest["launchAsset"]
    assert launch["path"] == ios["launchAsset"]["key"]
    assert launch["sha256"] == ios["launchAsset"]["sha256"]
    assert launch["size"] == ios["launchAsset"]["size"]
    with server.anon() as client:
        data = client.get(launch["url"]).content
    assert hashlib.sha256(data).hexdigest() == launch["sha256"]
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    assert launch["hash"] == digest
    assert "directive" not in body and "signature" not in body


def test_no_update_cases(server: ServerProcess, project: str, tmp_path: Path) -> None:
    none = check(server, projectId=project).json()
    assert none == {
        "updateAvailable": False,
        "isMandatory": False,
        "directive": {"type": "noUpdateAvailable"},
    }
    ios = publish_small(server, project, tmp_path)["ios"]
    same = check(server, projectId=project, currentUpdateId=ios["id"]).json()
    assert same["updateAvailable"] is False and "manifest" not in same
    other_runtime = check(server, projectId=project, runtimeVersion="2").json()
    assert other_runtime["updateAvailable"] is False


def test_channels_and_platforms(server: ServerProcess, project: str, tmp_path: Path) -> None:
    prod = publish_small(server, project, tmp_path)
    staging = publish_small(server, project, tmp_path, channel="staging")
    body = check(server, projectId=project).json()
    assert body["manifest"]["id"] == prod["ios"]["id"]
    body = check(server, projectId=project, channel="staging", platform="android").json()
    assert body["manifest"]["id"] == staging["android"]["id"]


def test_mandatory_when_a_skipped_update_was(
    server: ServerProcess, project: str, tmp_path: Path
) -> None:
    first = publish_small(server, project, tmp_path)["ios"]
    second = publish_small(server, project, tmp_path)["ios"]
    third = publish_small(server, project, tmp_path)["ios"]
    with server.client() as client:
        resp = client.patch(f"/api/v1/updates/{second['id']}", json={"mandatory": True})
    assert resp.status_code == 200, resp.text
    body = check(server, projectId=project, currentUpdateId=first["id"]).json()
    assert body["manifest"]["id"] == third["id"] and body["isMandatory"] is True
    body = check(server, projectId=project, currentUpdateId=second["id"]).json()
    assert body["manifest"]["id"] == third["id"] and body["isMandatory"] is False


def test_gradual_rollout_is_stable_and_monotonic(
    server: ServerProcess, project: str, tmp_path: Path
) -> None:
    base = publish_small(server, project, tmp_path)["ios"]
    partial = publish_small(server, project, tmp_path, rollout=30)["ios"]
    devices = [f"device-{i}" for i in range(60)]

    def served(device: str) -> str:
        return str(check(server, projectId=project, deviceId=device).json()["manifest"]["id"])

    first_round = {d: served(d) for d in devices}
    for device, update_id in first_round.items():
        expected = partial["id"] if in_rollout(partial["id"], device, 30) else base["id"]
        assert update_id == expected
    assert {d: served(d) for d in devices[:20]} == {d: first_round[d] for d in devices[:20]}
    assert served_without_id(server, project) == base["id"]

    with server.client() as client:
        resp = client.patch(f"/api/v1/updates/{partial['id']}", json={"rollout": 100})
    assert resp.status_code == 200
    assert all(served(d) == partial["id"] for d in devices)


def served_without_id(server: ServerProcess, project: str) -> str:
    return str(check(server, projectId=project).json()["manifest"]["id"])


def test_runtime_range_serves_the_device_version(
    server: ServerProcess, project: str, tmp_path: Path
) -> None:
    ios = publish_small(server, project, tmp_path, runtime_version="^1.2.0")["ios"]
    body = check(server, projectId=project, runtimeVersion="1.4.0").json()
    assert body["manifest"]["id"] == ios["id"]
    assert body["manifest"]["runtimeVersion"] == "1.4.0"
    assert (
        check(server, projectId=project, runtimeVersion="2.0.0").json()["updateAvailable"] is False
    )


def test_rollback_to_embedded(server: ServerProcess, project: str, tmp_path: Path) -> None:
    ios = publish_small(server, project, tmp_path)["ios"]
    with server.client() as client:
        resp = client.post(f"/api/v1/updates/{ios['id']}/rollback", json={"toEmbedded": True})
    assert resp.status_code in (200, 201), resp.text
    body = check(server, projectId=project, currentUpdateId=ios["id"]).json()
    assert body["updateAvailable"] is False
    assert body["directive"]["type"] == "rollBackToEmbedded"
    assert body["directive"]["parameters"]["commitTime"] == resp.json()["createdAt"]


def test_signed_answers(server: ServerProcess, project: str, tmp_path: Path) -> None:
    ios = publish_small(server, project, tmp_path)["ios"]
    assert check(server, projectId=project, signed=True).status_code == 400
    key_pem, cert_pem = generate_signing_identity("check-test")
    enable_signing(server, project, (key_pem, cert_pem))
    public_key = x509.load_pem_x509_certificate(cert_pem).public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)

    def verify(text: str, signature: str) -> None:
        fields = dict(part.strip().split("=", 1) for part in signature.split(","))
        assert fields["keyid"] == '"main"' and fields["alg"] == '"rsa-v1_5-sha256"'
        sig = base64.b64decode(fields["sig"].strip('"'))
        public_key.verify(sig, text.encode(), padding.PKCS1v15(), hashes.SHA256())

    resp = check(server, projectId=project, signed=True)
    body = resp.json()
    verify(body["manifestText"], body["signature"])
    assert resp.headers["expo-signature"] == body["signature"]
    assert json.loads(body["manifestText"]) == body["manifest"]
    assert body["manifest"]["id"] == ios["id"]

    resp = check(server, projectId=project, currentUpdateId=ios["id"], signed=True)
    body = resp.json()
    verify(body["directiveText"], body["signature"])
    assert json.loads(body["directiveText"]) == body["directive"]

    # The header form asks for a signature too; unsigned requests get none.
    with server.anon() as client:
        resp = client.post(
            "/api/v1/updates/check",
            json={"projectId": project, "platform": "ios", "runtimeVersion": "1"},
            headers={"expo-expect-signature": "sig"},
        )
    assert "manifestText" in resp.json()
    assert "signature" not in check(server, projectId=project).json()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"platform": "windows"}, 422),
        ({"runtimeVersion": ""}, 422),
        ({"surprise": 1}, 422),
        ({"deviceId": "x" * 500}, 422),
        ({"recentFailedUpdateIds": ["x"] * 51}, 422),
    ],
)
def test_bad_requests(
    server: ServerProcess, project: str, body: dict[str, Any], status: int
) -> None:
    resp = check(server, projectId=project, **body)
    assert resp.status_code == status
    assert resp.headers["content-type"].startswith("application/problem+json")


def test_unknown_project_and_malformed_json(server: ServerProcess) -> None:
    resp = check(server, projectId="missing-" + uuid.uuid4().hex[:6])
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("application/problem+json")
    with server.anon() as client:
        resp = client.post(
            "/api/v1/updates/check",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
    assert resp.status_code == 400
    assert resp.headers["content-type"].startswith("application/problem+json")


def test_recent_failed_ids_are_skipped(server: ServerProcess, project: str, tmp_path: Path) -> None:
    older = publish_small(server, project, tmp_path)["ios"]
    newer = publish_small(server, project, tmp_path)["ios"]
    body = check(server, projectId=project, recentFailedUpdateIds=[newer["id"]]).json()
    assert body["manifest"]["id"] == older["id"]


def test_cors_for_browsers(server: ServerProcess, project: str) -> None:
    with server.anon() as client:
        preflight = client.options(
            "/api/v1/updates/check",
            headers={
                "origin": "https://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] in ("*", "https://app.example")
        resp = client.post(
            "/api/v1/updates/check",
            json={"projectId": project, "platform": "ios", "runtimeVersion": "1"},
            headers={"origin": "https://app.example"},
        )
        assert resp.headers["access-control-allow-origin"] in ("*", "https://app.example")
        # The management API is not opened to other origins.
        mgmt = client.get("/api/v1/projects", headers={"origin": "https://app.example"})
        assert "access-control-allow-origin" not in mgmt.headers


def test_asset_urls_follow_the_configured_cdn_base(tmp_path: Path) -> None:
    cdn = "https://cdn.example/ota-assets"
    with in_process_app(tmp_path, asset_base_url=cdn + "/") as (client, _):
        create_project(client, "cdn")
        publish_export(client, "cdn", make_export(tmp_path / "export", seed="cdn"))
        body = {"projectId": "cdn", "platform": "ios", "runtimeVersion": "1"}
        manifest = client.post("/api/v1/updates/check", json=body).json()["manifest"]
    for asset in (manifest["launchAsset"], *manifest["assets"]):
        assert asset["url"] == f"{cdn}/{asset['sha256']}{asset['fileExtension']}"
