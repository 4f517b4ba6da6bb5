"""The client SDK against a real ``lumora serve`` process (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import REPO_ROOT, ServerProcess, create_project, publish_dir
from lumora_ota.client import (
    FetcherInterface,
    FetchResponse,
    HttpxFetcher,
    LumoraClientError,
    NetworkError,
    SignatureError,
    UpdateManager,
)
from lumora_ota.signing import generate_signing_identity
from test_client_fakes import tree

V1 = {"main.py": b"print('v1')\n" * 30, "assets/logo.png": b"\x89PNG" + bytes(range(256)) * 8}
V2 = {
    "main.py": b"print('v2')\n" * 40,
    "assets/logo.png": V1["assets/logo.png"],
    "assets/font.ttf": b"font-data" * 500,
}


class CountingFetcher(FetcherInterface):
    """Wraps the httpx fetcher and records every request (optionally rewriting answers)."""

    def __init__(self, rewrite_check: Any = None) -> None:
        self.inner = HttpxFetcher(timeout=10, chunk_size=1024)
        self.requests: list[tuple[str, str]] = []
        self.answers: list[tuple[str, int, dict[str, str], dict[str, str]]] = []
        self.rewrite_check = rewrite_check
        self.cut_after: dict[str, int] = {}  # url -> bytes passed before breaking (once)

    def _fetch(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> FetchResponse:
        self.requests.append((method, url))
        response = self.inner._fetch(method, url, headers, body)
        self.answers.append((url, response.status, dict(headers), dict(response.headers)))
        if self.rewrite_check and url.endswith("/updates/check"):
            data = self.rewrite_check(b"".join(response.chunks))
            return FetchResponse(response.status, response.headers, iter([data]), response.close)
        if url in self.cut_after:
            cut = self.cut_after.pop(url)
            return FetchResponse(
                response.status, response.headers, _cut(response.chunks, cut), response.close
            )
        return response

    def asset_gets(self) -> list[str]:
        return [url for method, url in self.requests if method == "GET"]

    def close(self) -> None:
        self.inner.close()


def _cut(chunks: Iterator[bytes], after: int) -> Iterator[bytes]:
    """Pass ``after`` bytes through, then break like a dropped connection."""
    sent = 0
    for chunk in chunks:
        if sent + len(chunk) >= after:
            yield chunk[: after - sent]
            raise NetworkError("connection dropped (test)")
        sent += len(chunk)
        yield chunk


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


class App:
    """One device of one project: builds managers over a data dir like app restarts do."""

    def __init__(self, server: ServerProcess, project: str, tmp_path: Path) -> None:
        self.server = server
        self.project = project
        self.data_dir = tmp_path / "device"
        self.embedded = write_files(tmp_path / "embedded", {"main.py": b"print('embedded')"})
        self.tmp_path = tmp_path
        self.fetcher = CountingFetcher()
        self.errors: list[Exception] = []

    def manager(self, data_dir: Path | None = None, **kwargs: Any) -> UpdateManager:
        options: dict[str, Any] = {
            "embedded_dir": self.embedded,
            "fetcher": self.fetcher,
            "on_error": self.errors.append,
        }
        options.update(kwargs)
        return UpdateManager(
            self.server.url,
            self.project,
            "production",
            "1",
            "ios",
            data_dir or self.data_dir,
            **options,
        )

    def publish(
        self, name: str, files: dict[str, bytes], launch: str = "main.py", **options: Any
    ) -> str:
        root = write_files(self.tmp_path / name, files)
        with self.server.client() as client:
            answer = publish_dir(client, self.project, root, launch=launch, **options)
        update_id: str = answer["updates"][0]["id"]
        return update_id


@pytest.fixture
def app(server: ServerProcess, unique: str, tmp_path: Path) -> App:
    slug = f"sdk-{unique}"
    with server.client() as client:
        create_project(client, slug)
    return App(server, slug, tmp_path)


def wait_for_stats(app: App, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
    """Poll GET /stats until ``predicate(totals)`` holds (stats are flushed in batches)."""
    deadline = time.monotonic() + timeout
    with app.server.client() as client:
        while True:
            resp = client.get("/api/v1/stats", params={"project": app.project})
            resp.raise_for_status()
            totals: dict[str, Any] = resp.json()["totals"]
            if predicate(totals) or time.monotonic() > deadline:
                return totals
            time.sleep(0.1)


def test_first_install_then_update_downloads_only_new_assets(app: App) -> None:
    manager = app.manager()
    assert manager.launch() == app.embedded
    u1 = app.publish("v1", V1, message="first")
    result = manager.check_for_update()
    assert result.update_available and result.update_id == u1 and result.message == "first"
    assert result.download_size == sum(len(v) for v in V1.values())
    manager.download_and_install_update(result)
    assert len(app.fetcher.asset_gets()) == 2
    manager.apply_update()
    restarted = app.manager()
    assert restarted.launch() == app.data_dir / "updates" / u1
    assert tree(app.data_dir / "updates" / u1) == V1
    restarted.mark_launch_successful()
    assert not restarted.check_for_update().update_available

    u2 = app.publish("v2", V2)
    before = len(app.fetcher.asset_gets())
    result = restarted.check_for_update()
    assert result.update_id == u2
    assert result.download_size == len(V2["main.py"]) + len(V2["assets/font.ttf"])
    installed = restarted.download_and_install_update(result)
    new_gets = app.fetcher.asset_gets()[before:]
    assert len(new_gets) == 2
    assert not any(url.endswith(".png") for url in new_gets)  # the cached logo
    assert tree(installed.directory) == V2
    restarted.apply_update()
    third = app.manager()
    assert third.launch() == installed.directory
    third.mark_launch_successful()
    for m in (manager, restarted, third):
        m.close()
    assert app.errors == []
    totals = wait_for_stats(app, lambda t: t.get("installs", 0) >= 2)
    assert totals["installs"] >= 2 and totals["launchSuccesses"] >= 2


def test_rollout_exclusion(app: App) -> None:
    manager = app.manager()
    u1 = app.publish("v1", V1)
    manager.download_and_install_update(manager.check_for_update())
    manager.apply_update()
    manager = app.manager()
    manager.launch()
    manager.mark_launch_successful()
    u2 = app.publish("v2", V2, rollout=0)
    assert not manager.check_for_update().update_available  # outside the 0 % rollout
    fresh = app.manager(app.tmp_path / "fresh-device")
    assert fresh.check_for_update().update_id == u1  # the previous eligible update
    with app.server.client() as client:
        client.patch(f"/api/v1/updates/{u2}", json={"rollout": 100}).raise_for_status()
    deadline = time.monotonic() + 10
    while (result := manager.check_for_update()).update_id != u2:
        assert time.monotonic() < deadline, "raising the rollout never reached the device"
        time.sleep(0.1)
    assert result.update_available
    manager.close()
    fresh.close()


def _enable_signing(app: App) -> bytes:
    key_pem, cert_pem = generate_signing_identity("sdk-test")
    with app.server.client() as client:
        resp = client.put(
            f"/api/v1/projects/{app.project}/signing",
            json={
                "keyid": "main",
                "privateKeyPem": key_pem.decode(),
                "certificatePem": cert_pem.decode(),
            },
        )
        resp.raise_for_status()
    return cert_pem


def test_signature_required_verified_and_tampered(app: App) -> None:
    _key, other_cert = generate_signing_identity("not-the-project")
    app.publish("v1", V1)
    # the project does not sign: a client that requires signatures refuses the answer
    unsigned = app.manager(certificate=other_cert)
    with pytest.raises(LumoraClientError):
        unsigned.check_for_update()
    assert app.errors and app.fetcher.asset_gets() == []
    cert_pem = _enable_signing(app)
    # wrong certificate
    with pytest.raises(SignatureError):
        app.manager(certificate=other_cert).check_for_update()
    # tampered in transit: an asset size changed inside the signed text
    tampering = CountingFetcher(rewrite_check=_tamper)
    tampered = app.manager(certificate=cert_pem, fetcher=tampering)
    with pytest.raises(SignatureError):
        tampered.check_for_update()
    assert tampering.asset_gets() == [] and app.fetcher.asset_gets() == []
    # the genuine signed answer verifies and installs
    signed = app.manager(certificate=cert_pem)
    result = signed.check_for_update()
    assert result.update_available and result.signature_verified
    installed = signed.download_and_install_update(result)
    assert tree(installed.directory) == V1
    for m in (unsigned, tampered, signed):
        m.close()


def _tamper(body: bytes) -> bytes:
    doc = json.loads(body)
    manifest = json.loads(doc["manifestText"])
    manifest["launchAsset"]["url"] = manifest["launchAsset"]["url"].replace("/assets/", "/evil/")
    doc["manifestText"] = json.dumps(manifest, separators=(",", ":"))
    doc["manifest"] = manifest
    return json.dumps(doc).encode()


def test_roll_back_to_embedded_directive(app: App) -> None:
    manager = app.manager()
    u1 = app.publish("v1", V1)
    manager.download_and_install_update(manager.check_for_update())
    manager.apply_update()
    running = app.manager()
    assert running.launch() == app.data_dir / "updates" / u1
    running.mark_launch_successful()
    with app.server.client() as client:
        resp = client.post(f"/api/v1/updates/{u1}/rollback", json={"toEmbedded": True})
        assert resp.status_code in (200, 201), resp.text
    deadline = time.monotonic() + 10
    while (result := running.check_for_update()).directive != "rollBackToEmbedded":
        assert time.monotonic() < deadline, "the directive never arrived"
        time.sleep(0.1)
    assert not result.update_available
    after = app.manager()
    assert after.launch() == app.embedded
    for m in (manager, running, after):
        m.close()
    totals = wait_for_stats(app, lambda t: t.get("rollbacks", 0) >= 1)
    assert totals["rollbacks"] >= 1


def test_crash_loop_is_rolled_back_reported_and_not_downloaded_again(app: App) -> None:
    manager = app.manager()
    u1 = app.publish("v1", V1)
    manager.download_and_install_update(manager.check_for_update())
    manager.apply_update()
    crashing = app.manager()
    assert crashing.launch() == app.data_dir / "updates" / u1
    # ... the app dies before mark_launch_successful()
    recovered = app.manager()
    assert recovered.launch() == app.embedded
    assert recovered.failed_update_ids == (u1,)
    gets_before = len(app.fetcher.asset_gets())
    result = recovered.check_for_update()
    assert not result.update_available
    assert len(app.fetcher.asset_gets()) == gets_before
    assert recovered.flush_events()
    for m in (manager, crashing, recovered):
        m.close()
    totals = wait_for_stats(
        app, lambda t: t.get("rollbacks", 0) >= 1 and t.get("launchFailures", 0) >= 1
    )
    assert totals["rollbacks"] == 1 and totals["launchFailures"] == 1
    # the server itself no longer offers the failed update to this device
    with httpx.Client(base_url=app.server.url) as client:
        resp = client.post(
            "/api/v1/updates/check",
            json={
                "projectId": app.project,
                "platform": "ios",
                "runtimeVersion": "1",
                "deviceId": recovered.device_id,
                "recentFailedUpdateIds": [u1],
            },
        )
        assert resp.status_code == 200 and resp.json()["updateAvailable"] is False


def test_example_app_updates_itself(app: App) -> None:
    """examples/desktop_app.py --headless: the first run installs, the second runs the update."""
    new_bundle = {"app.json": json.dumps({"title": "Updated over the air"}).encode()}
    update_id = app.publish("bundle", new_bundle, launch="app.json", platforms=("web",))
    command = [
        sys.executable,
        str(REPO_ROOT / "examples" / "desktop_app.py"),
        "--headless",
        "--server",
        app.server.url,
        "--project",
        app.project,
        "--data-dir",
        str(app.data_dir),
    ]
    first = json.loads(subprocess.run(command, capture_output=True, check=True).stdout)
    assert first["update"] is None and first["installed"] == update_id
    assert first["launched"].endswith("desktop_app_bundle")
    second = json.loads(subprocess.run(command, capture_output=True, check=True).stdout)
    assert second["update"] == update_id and "installed" not in second
    launched = Path(second["launched"])
    assert json.loads((launched / "app.json").read_text())["title"] == "Updated over the air"


def test_interrupted_download_resumes_with_range_against_the_server(app: App) -> None:
    big = {"main.py": b"print('big')\n", "data.bin": bytes(range(256)) * 400}
    app.publish("big", big)
    manager = app.manager()
    result = manager.check_for_update()
    assert result.manifest is not None
    url = next(a.url for a in result.manifest.files if a.path == "data.bin")
    app.fetcher.cut_after[url] = 5000
    installed = manager.download_and_install_update(result)
    assert tree(installed.directory) == big
    answers = [a for a in app.fetcher.answers if a[0] == url]
    assert len(answers) == 2
    _url, status, request_headers, response_headers = answers[1]
    assert request_headers["range"] == "bytes=5000-" and status == 206
    assert response_headers["content-range"].startswith("bytes 5000-")
    manager.close()


def test_brotli_variants_are_decoded(app: App) -> None:
    bundle = {"main.js": b"console.log('a fairly compressible bundle');\n" * 2000}
    app.publish("js", bundle, launch="main.js")
    manager = app.manager()
    result = manager.check_for_update()
    assert result.manifest is not None
    url = result.manifest.launch_asset.url
    # variants are written in the background after the publish: wait until br is served
    deadline = time.monotonic() + 20
    with httpx.Client() as raw:
        while (
            raw.head(url, headers={"accept-encoding": "br"}).headers.get("content-encoding") != "br"
        ):
            assert time.monotonic() < deadline, "the server never served a brotli variant"
            time.sleep(0.1)
    installed = manager.download_and_install_update(result)
    answers = [a for a in app.fetcher.answers if a[0] == url]
    assert answers[-1][3].get("content-encoding") == "br"
    assert tree(installed.directory) == bundle
    manager.close()
