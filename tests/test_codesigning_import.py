"""``lumora codesigning import``: a key pair made by ``npx expo-updates codesigning:generate``
turns signing on, and manifests then verify against that certificate as expo-updates checks
them (the client model); unusable pairs are refused with one clear line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from expo_client_model import CodeSigning, Device, EmbeddedBuild, run_update_cycle
from harness import ServerProcess, publish_export
from lumora_ota.signing import private_key_to_pem
from test_cli_e2e import Cli, _base_env


@pytest.fixture
def cli(server: ServerProcess, tmp_path: Path) -> Cli:
    env = _base_env(tmp_path)
    env.update(LUMORA_SERVER=server.url, LUMORA_API_KEY=server.admin_key)
    return Cli(env, tmp_path)


@pytest.fixture
def project(cli: Cli, unique: str) -> str:
    return str(cli.json("projects", "create", f"Sign {unique}", "--slug", f"sign-{unique}")["slug"])


def test_import_the_expo_tools_pair_and_devices_verify(
    cli: Cli, project: str, server: ServerProcess, fixtures_dir: Path
) -> None:
    pair = fixtures_dir / "expo-codesigning"
    result = cli.json(
        "codesigning", "import", "--project", project, "--keyid", "main",
        "--private-key", str(pair / "private-key.pem"),
        "--certificate", str(pair / "certificate.pem"),
    )  # fmt: skip
    assert result["keyid"] == "main" and "Test App" in result["certificateSubject"]
    with server.client() as admin:
        publish_export(admin, project, fixtures_dir / "expo-export-sdk58-v1", runtime_version="1")
    cert = x509.load_pem_x509_certificate((pair / "certificate.pem").read_bytes())
    build = EmbeddedBuild("1", datetime(2026, 1, 1, tzinfo=UTC), {"embedded-bundle": b"//"})
    device = Device(build, code_signing=CodeSigning(cert, keyid="main"))
    with httpx.Client() as client:
        url = f"{server.url}/api/v1/expo/{project}/manifest"
        assert run_update_cycle(device, client, url) == "downloaded"


def _cert(
    key: rsa.RSAPrivateKey,
    *,
    eku: bool = True,
    digital_signature: bool = True,
    days: tuple[int, int] = (-1, 365),
) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "import test")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + timedelta(days=days[0]))
        .not_valid_after(now + timedelta(days=days[1]))
        .add_extension(
            x509.KeyUsage(digital_signature, False, not digital_signature, False, False,
                          False, False, False, False),
            critical=True,
        )
    )  # fmt: skip
    if eku:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_unusable_pairs_are_refused_with_one_line(cli: Cli, project: str, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cases = {
        "at least 2048": (small, _cert(small)),
        "does not belong": (key, _cert(other)),
        "codeSigning": (key, _cert(key, eku=False)),
        "digitalSignature": (key, _cert(key, digital_signature=False)),
        "expired": (key, _cert(key, days=(-30, -1))),
        "not valid before": (key, _cert(key, days=(2, 30))),
    }
    for expected, (private, cert) in cases.items():
        key_path, cert_path = tmp_path / "k.pem", tmp_path / "c.pem"
        key_path.write_bytes(private_key_to_pem(private))
        cert_path.write_bytes(cert)
        line = cli.fails(
            "codesigning", "import", "--project", project,
            "--private-key", str(key_path), "--certificate", str(cert_path),
        )  # fmt: skip
        assert expected in line, line
    assert "cannot read" in cli.fails(
        "codesigning", "import", "--project", project,
        "--private-key", str(tmp_path / "missing.pem"), "--certificate", str(cert_path),
    )  # fmt: skip
    with httpx.Client(base_url=cli.env["LUMORA_SERVER"]) as client:
        headers = {"authorization": f"Bearer {cli.env['LUMORA_API_KEY']}"}
        signing = client.get(f"/api/v1/projects/{project}/signing", headers=headers).json()
        assert signing == {"enabled": False}
        # The API refuses what the CLI refuses, for callers that skip the CLI.
        expired = {
            "keyid": "main",
            "privateKeyPem": private_key_to_pem(key).decode(),
            "certificatePem": _cert(key, days=(-30, -1)).decode(),
        }
        resp = client.put(f"/api/v1/projects/{project}/signing", json=expired, headers=headers)
        assert resp.status_code == 400 and "expired" in resp.json()["detail"]
