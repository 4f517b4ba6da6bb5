"""Publisher-held signing keys (issue 20): the private key stays with the publisher.

Against real servers (SQLite and PostgreSQL) and the real ``lumora`` CLI, with the key pair
``npx expo-updates codesigning:generate`` made (``fixtures/expo-codesigning``): the server
holds no private key of the publisher, serves nothing its publisher did not sign, and what
it serves verifies as expo-updates verifies it (the tests' client model) and in the SDK.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from sqlalchemy import create_engine, inspect, text

from conftest import ServerFactory
from expo_client_model import CodeSigning, Device, EmbeddedBuild, parse_answer, run_update_cycle
from harness import ServerProcess
from lumora_ota.client import UpdateManager
from test_cli_e2e import Cli, _base_env


@pytest.fixture
def cli(server: ServerProcess, tmp_path: Path) -> Cli:
    env = _base_env(tmp_path)
    env.update(LUMORA_SERVER=server.url, LUMORA_API_KEY=server.admin_key)
    return Cli(env, tmp_path)


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _publish(cli: Cli, project: str, root: Path, *extra: str) -> str:
    answer = cli.json(
        "publish", str(root), "--project", project, "--launch-asset", "main.js",
        "--runtime-version", "1", "--platform", "ios", "--yes", "--message", root.name, *extra,
    )  # fmt: skip
    return str(answer["updateIds"][0])


def _device(cert: x509.Certificate) -> Device:
    build = EmbeddedBuild("1", datetime(2026, 1, 1, tzinfo=UTC), {"embedded-bundle": b"//"})
    return Device(build, code_signing=CodeSigning(cert, keyid="main"))


def _strings_in_database(url: str) -> list[tuple[str, str, str]]:
    """Every string value stored in the database: (table, column, value)."""
    engine = create_engine(url)
    found: list[tuple[str, str, str]] = []
    try:
        with engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                result = conn.execute(text(f'SELECT * FROM "{table}"'))
                columns = list(result.keys())
                for row in result:
                    for column, value in zip(columns, row, strict=True):
                        if isinstance(value, str | bytes):
                            shown = value.decode("latin-1") if isinstance(value, bytes) else value
                            found.append((table, column, shown))
    finally:
        engine.dispose()
    return found


@pytest.fixture
def own_server(server: ServerProcess, server_factory: ServerFactory) -> ServerProcess:
    """A server of the session server's backend for one test alone: other tests import the
    same fixture key pair in server-held mode, which would put it in a shared server."""
    backend = "sqlite" if server.database_url.startswith("sqlite") else "postgres"
    return server_factory(backend)


def test_publisher_held_key_never_reaches_the_server(
    own_server: ServerProcess, fixtures_dir: Path, tmp_path: Path, unique: str
) -> None:
    server = own_server
    env = _base_env(tmp_path)
    env.update(LUMORA_SERVER=server.url, LUMORA_API_KEY=server.admin_key)
    cli = Cli(env, tmp_path)
    pair = fixtures_dir / "expo-codesigning"
    key, cert_path = pair / "private-key.pem", pair / "certificate.pem"
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    project = str(
        cli.json("projects", "create", f"Pub {unique}", "--slug", f"pub-{unique}")["slug"]
    )
    timestamp_path = tmp_path / "timestamp.pem"
    setup = cli.json(
        "codesigning", "publisher-held", "--project", project, "--keyid", "main",
        "--private-key", str(key), "--certificate", str(cert_path),
        "--timestamp-certificate-out", str(timestamp_path),
    )  # fmt: skip
    assert setup["mode"] == "publisher" and timestamp_path.read_text().startswith("-----BEGIN")
    manifest_url = f"{server.url}/api/v1/expo/{project}/manifest"
    device = _device(cert)
    sdk_dir = tmp_path / "sdk"

    def sdk() -> UpdateManager:
        return UpdateManager(
            server.url, project, "production", "1", "ios", sdk_dir,
            certificate=cert_path, freshness_certificate=timestamp_path, report_events=False,
        )  # fmt: skip

    with httpx.Client() as client:
        # Published but not signed: nobody is served it, signed request or not; the
        # answer is the noUpdateAvailable directive the publisher signed at setup.
        v1 = _publish(cli, project, _write(tmp_path / "v1", {"main.js": b"v1()" * 100}))
        assert run_update_cycle(device, client, manifest_url) == "nothing"
        plain = client.get(
            manifest_url,
            headers={"expo-platform": "ios", "expo-runtime-version": "1", "accept": "*/*"},
        )
        assert v1 not in plain.text
        assert not sdk().check_for_update().update_available
        listed = cli.json("codesigning", "sign", "--project", project, "--private-key", str(key))
        assert listed["signed"] == 2  # the Expo and the Lumora manifest
        assert run_update_cycle(device, client, manifest_url) == "downloaded"
        assert device.running_id == v1

        # Published and signed in one go.
        v2 = _publish(
            cli, project, _write(tmp_path / "v2", {"main.js": b"v2()" * 100}),
            "--private-key", str(key),
        )  # fmt: skip
        assert run_update_cycle(device, client, manifest_url) == "downloaded"
        assert device.running_id == v2
        manager = sdk()
        result = manager.check_for_update()
        assert result.update_id == v2 and result.signature_verified
        manager.download_and_install_update(result)
        manager.apply_update()
        manager.close()

        # A rollback signed by the CLI reaches devices (a republished copy of v1).
        rolled = cli.json("updates", "rollback", v2, "--yes", "--private-key", str(key))
        copy = rolled["replacement"]["id"] if "replacement" in rolled else rolled["id"]
        assert copy not in (v1, v2)
        assert run_update_cycle(device, client, manifest_url) == "downloaded"
        assert device.running_id == copy
        manager = sdk()
        manager.launch()
        result = manager.check_for_update()
        assert result.update_id == copy
        manager.download_and_install_update(result)
        manager.close()

        # Roll back to the embedded update: the directive is signed by the CLI as well.
        cli.json("updates", "rollback", copy, "--yes", "--to-embedded", "--private-key", str(key))
        assert run_update_cycle(device, client, manifest_url) == "rollBackToEmbedded"

    # Nothing of the publisher's key is on the server: not in its files, not in the database.
    key_lines = [
        line for line in key.read_text().splitlines() if line and not line.startswith("-----")
    ]
    for path in server.data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(line.encode() in data for line in key_lines), path
    stored = _strings_in_database(server.database_url)
    assert not any(line in value for _t, _c, value in stored for line in key_lines)
    engine = create_engine(server.database_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT k.private_key_pem, k.private_key_path, k.certificate_pem, k.mode "
                    "FROM signing_keys k JOIN projects p ON p.id = k.project_id WHERE p.slug = :s"
                ),
                {"s": project},
            ).one()
    finally:
        engine.dispose()
    assert row[0] is None and row[1] is None and row[3] == "publisher"
    assert (
        row[2].replace("\r\n", "\n").strip() == cert_path.read_text().replace("\r\n", "\n").strip()
    )


def test_unsigned_upload_and_foreign_bodies_are_refused(
    cli: Cli, server: ServerProcess, fixtures_dir: Path, tmp_path: Path, unique: str
) -> None:
    pair = fixtures_dir / "expo-codesigning"
    project = str(
        cli.json("projects", "create", f"Pub {unique}", "--slug", f"pub-{unique}")["slug"]
    )
    cli.json(
        "codesigning", "publisher-held", "--project", project, "--keyid", "main",
        "--private-key", str(pair / "private-key.pem"),
        "--certificate", str(pair / "certificate.pem"),
    )  # fmt: skip
    update = _publish(cli, project, _write(tmp_path / "v1", {"main.js": b"v1()"}))
    with server.client() as admin:
        listed = admin.get(f"/api/v1/projects/{project}/signing/unsigned").json()["unsigned"]
        assert {e["updateId"] for e in listed} == {update}
        entry = listed[0]
        # A signature by another key, and a body the server does not serve: 400, nothing stored.
        from lumora_ota.signing import generate_signing_identity, load_private_key, sign_rsa_sha256

        other_key, _ = generate_signing_identity("other")
        bad = sign_rsa_sha256(load_private_key(other_key), entry["body"].encode())
        answer = admin.post(
            f"/api/v1/projects/{project}/signing/signatures",
            json={"signatures": [{"updateId": update, "body": entry["body"], "signature": bad}]},
        )
        assert answer.status_code == 400 and "does not verify" in answer.json()["detail"]
        mine = load_private_key((pair / "private-key.pem").read_bytes())
        forged = json.dumps({**json.loads(entry["body"]), "id": "x"}, separators=(",", ":"))
        answer = admin.post(
            f"/api/v1/projects/{project}/signing/signatures",
            json={
                "signatures": [
                    {
                        "updateId": update,
                        "body": forged,
                        "signature": sign_rsa_sha256(mine, forged.encode()),
                    }
                ]
            },
        )
        assert answer.status_code == 400 and "not one the server serves" in answer.json()["detail"]
        assert (
            len(admin.get(f"/api/v1/projects/{project}/signing/unsigned").json()["unsigned"]) == 2
        )
        # A private key in publisher-held mode is refused.
        answer = admin.put(
            f"/api/v1/projects/{project}/signing",
            json={
                "mode": "publisher",
                "keyid": "main",
                "certificatePem": (pair / "certificate.pem").read_text(),
                "privateKeyPem": (pair / "private-key.pem").read_text(),
            },
        )
        assert answer.status_code == 400
    # The CLI refuses to sign a manifest whose asset URLs point elsewhere.
    from lumora_ota.api_models import UnsignedBody
    from lumora_ota.cli.errors import CliError
    from lumora_ota.cli.publisher_signing import check_intended

    body = json.loads(listed[0]["body"])
    body["launchAsset"]["url"] = "https://evil.example/x.js"
    evil = UnsignedBody(
        update_id=update,
        kind=listed[0]["kind"],
        body=json.dumps(body, separators=(",", ":")),
        sha256="-",
    )
    with pytest.raises(CliError, match=r"evil\.example"):
        check_intended(evil, origins=[server.url])


def test_expo_code_signing_certificates_verifies_what_is_served(
    cli: Cli, server: ServerProcess, fixtures_dir: Path, tmp_path: Path, unique: str
) -> None:
    """Expo's own verifier (``@expo/code-signing-certificates`` from npm) accepts the
    publisher's signatures as the server serves them."""
    npm = shutil.which("npm")
    node = shutil.which("node")
    if npm is None or node is None:
        pytest.skip("npm and node are needed")
    scratch = tmp_path / "npm"
    scratch.mkdir()
    installed = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent", "@expo/code-signing-certificates"],
        cwd=scratch, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if installed.returncode != 0:
        pytest.skip(f"npm install failed: {installed.stderr[-300:]}")
    pair = fixtures_dir / "expo-codesigning"
    project = str(
        cli.json("projects", "create", f"Pub {unique}", "--slug", f"pub-{unique}")["slug"]
    )
    cli.json(
        "codesigning", "publisher-held", "--project", project, "--keyid", "main",
        "--private-key", str(pair / "private-key.pem"),
        "--certificate", str(pair / "certificate.pem"),
    )  # fmt: skip
    _publish(
        cli, project, _write(tmp_path / "v1", {"main.js": b"v1()"}),
        "--private-key", str(pair / "private-key.pem"),
    )  # fmt: skip
    headers = {
        "expo-platform": "ios",
        "expo-runtime-version": "1",
        "expo-protocol-version": "1",
        "accept": "application/expo+json",
        "expo-expect-signature": 'sig, keyid="main"',
    }
    with httpx.Client() as client:
        answer = client.get(f"{server.url}/api/v1/expo/{project}/manifest", headers=headers)
    assert answer.status_code == 200
    cases: list[dict[str, Any]] = [
        {"body": answer.text, "signature": answer.headers["expo-signature"]},
    ]
    with httpx.Client() as client:
        # The directive signed once at setup, as a multipart part of a device already on it.
        current = json.loads(answer.text)["id"]
        multipart = client.get(
            f"{server.url}/api/v1/expo/{project}/manifest",
            headers={**headers, "accept": "multipart/mixed", "expo-current-update-id": current},
        )
    parsed = parse_answer(multipart.status_code, multipart.headers, multipart.content)
    assert parsed.directive is not None
    cases.append(
        {
            "body": parsed.directive.body.decode(),
            "signature": parsed.directive.headers["expo-signature"],
        }
    )
    script = scratch / "verify.js"
    script.write_text(
        """
const fs = require('fs');
const path = require('path');
const expo = require('@expo/code-signing-certificates');
const forge = require(require.resolve('node-forge', {
  paths: [path.dirname(require.resolve('@expo/code-signing-certificates'))] }));
const [certPath, privatePath, publicPath, casesPath] = process.argv.slice(2);
const cert = expo.convertCertificatePEMToCertificate(fs.readFileSync(certPath, 'utf8'));
const keyPair = expo.convertKeyPairPEMToKeyPair({
  privateKeyPEM: fs.readFileSync(privatePath, 'utf8'),
  publicKeyPEM: fs.readFileSync(publicPath, 'utf8'),
});
expo.validateSelfSignedCertificate(cert, keyPair);
for (const c of JSON.parse(fs.readFileSync(casesPath, 'utf8'))) {
  const served = /sig="([^"]+)"/.exec(c.signature)[1];
  const digest = forge.md.sha256.create();
  digest.update(c.body, 'utf8');
  if (!cert.publicKey.verify(digest.digest().bytes(), forge.util.decode64(served))) {
    console.error('signature does not verify'); process.exit(1);
  }
  // What Expo's own tooling signs for these bytes is the signature served.
  const bytes = Buffer.from(c.body, 'utf8');
  const own = expo.signBufferRSASHA256AndVerify(keyPair.privateKey, cert, bytes);
  if (own !== served) { console.error('Expo signs these bytes differently'); process.exit(1); }
}
console.log('ok');
"""
    )
    (scratch / "cases.json").write_text(json.dumps(cases))
    done = subprocess.run(
        [
            node, str(script), str(pair / "certificate.pem"), str(pair / "private-key.pem"),
            str(pair / "public-key.pem"), str(scratch / "cases.json"),
        ],
        cwd=scratch, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_resign_after_the_asset_base_url_changes(
    server_factory: Any, fixtures_dir: Path, tmp_path: Path
) -> None:
    """Manifests name their asset URLs, so a new asset base URL changes every manifest's
    bytes: devices get nothing until ``lumora codesigning resign`` signs them again."""
    srv: ServerProcess = server_factory("sqlite")
    env = _base_env(tmp_path)
    env.update(LUMORA_SERVER=srv.url, LUMORA_API_KEY=srv.admin_key)
    cli = Cli(env, tmp_path)
    pair = fixtures_dir / "expo-codesigning"
    key, cert_path = pair / "private-key.pem", pair / "certificate.pem"
    cli.json("projects", "create", "Resign", "--slug", "resign")
    cli.json(
        "codesigning", "publisher-held", "--project", "resign", "--keyid", "main",
        "--private-key", str(key), "--certificate", str(cert_path),
    )  # fmt: skip
    v1 = _publish(
        cli, "resign", _write(tmp_path / "v1", {"main.js": b"v1()"}), "--private-key", str(key)
    )
    srv.stop()
    cdn = f"http://localhost:{srv.port}/api/v1/assets"  # another origin: a CDN, say
    srv.extra_env["LUMORA_ASSET_BASE_URL"] = cdn
    srv.start()
    manifest_url = f"{srv.url}/api/v1/expo/resign/manifest"
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    with httpx.Client() as client:
        assert run_update_cycle(_device(cert), client, manifest_url) == "nothing"
        # Without --asset-origin the CLI refuses to sign URLs on another origin.
        refused = cli.fails(
            "codesigning", "resign", "--project", "resign", "--private-key", str(key)
        )
        assert "localhost" in refused and "--asset-origin" in refused
        done = cli.json(
            "codesigning", "resign", "--project", "resign", "--private-key", str(key),
            "--asset-origin", f"http://localhost:{srv.port}",
        )  # fmt: skip
        assert done["signed"] == 2
        device = _device(cert)
        assert run_update_cycle(device, client, manifest_url) == "downloaded"
        assert device.running_id == v1
