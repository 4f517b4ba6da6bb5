"""Lumora's Expo answers read by Expo's own npm parsers.

``@expo/multipart-body-parser`` (what Expo's tooling uses to read multipart manifest
answers) and ``structured-headers`` (the SFV parser expo-updates' JS side relies on) are
installed with npm into a scratch directory of this test session; the module is skipped when
npm or the registry is unavailable.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from device_helpers import enable_signing, expo_headers, new_project
from harness import ServerProcess, publish_export

PACKAGES = ["@expo/multipart-body-parser@2", "structured-headers@2"]
SCRIPT = r"""
import fs from 'node:fs';
import pkg from '@expo/multipart-body-parser';
import { parseDictionary } from 'structured-headers';
const input = JSON.parse(fs.readFileSync(0, 'utf8'));
const dict = (value) => value === undefined ? null
  : Object.fromEntries([...parseDictionary(value)].map(([k, [v]]) => [k, String(v)]));
const parts = await pkg.parseMultipartMixedResponseAsync(
  input.contentType, Buffer.from(input.body, 'base64'));
console.log(JSON.stringify({
  filters: dict(input.headers['expo-manifest-filters']),
  serverDefined: dict(input.headers['expo-server-defined-headers']),
  parts: parts.map((p) => ({
    name: p.name,
    body: p.body,
    signature: dict(p.headers.get('expo-signature')),
  })),
}));
"""


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("npm/node are not installed")
    root = tmp_path_factory.mktemp("expo-npm")
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(root), *PACKAGES],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"npm install failed (offline?): {done.stderr[-300:]}")
    (root / "read.mjs").write_text(SCRIPT)
    return root


def read_with_expo(node_dir: Path, resp: Any) -> dict[str, Any]:
    payload = {
        "contentType": resp.headers["content-type"],
        "body": base64.b64encode(resp.content).decode(),
        "headers": {k.lower(): v for k, v in resp.headers.items()},
    }
    done = subprocess.run(
        ["node", str(node_dir / "read.mjs")], input=json.dumps(payload),
        capture_output=True, text=True, timeout=60, check=True, cwd=node_dir,
    )  # fmt: skip
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def test_expos_parsers_read_a_signed_sdk58_answer(
    node_dir: Path, server: ServerProcess, unique: str, fixtures_dir: Path
) -> None:
    slug = new_project(server, unique, "npm")
    pair = fixtures_dir / "expo-codesigning"
    enable_signing(
        server,
        slug,
        ((pair / "private-key.pem").read_bytes(), (pair / "certificate.pem").read_bytes()),
    )
    with server.client() as admin:
        answer, _ = publish_export(
            admin, slug, fixtures_dir / "expo-export-sdk58-v1", runtime_version="1.0.0"
        )
    with server.anon() as anon:
        resp = anon.get(
            f"/api/v1/expo/{slug}/manifest",
            headers=expo_headers(
                "ios", "1.0.0", expo_expect_signature='sig, keyid="main", alg="rsa-v1_5-sha256"'
            ),
        )
    assert resp.status_code == 200, resp.text
    read = read_with_expo(node_dir, resp)
    assert read["filters"] == {} and read["serverDefined"] == {}
    parts = {p["name"]: p for p in read["parts"]}
    manifest = json.loads(parts["manifest"]["body"])
    ios = next(u for u in answer["updates"] if u["platform"] == "ios")
    assert manifest["id"] == ios["id"]
    assert parts["manifest"]["signature"]["keyid"] == "main"
    assert parts["manifest"]["signature"]["alg"] == "rsa-v1_5-sha256"
    extensions = json.loads(parts["extensions"]["body"])
    keys = {a["key"] for a in manifest["assets"]} | {manifest["launchAsset"]["key"]}
    assert set(extensions["assetRequestHeaders"]) == keys
    assert {"8f93c743300158c5a36f04b047ebec73", "4bad1fc2285c63b28c012ad904afdde2"} <= keys
