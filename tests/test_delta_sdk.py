"""The Python SDK downloads the new launch asset as a bsdiff patch from the running update,
verifies it, and falls back to the full bundle when the patch does not produce it."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from delta_helpers import NEW_EXPORT, OLD_EXPORT, updates_by_platform, wait_for_patch
from harness import ServerProcess, create_project, publish_export, sha256_hex
from lumora_ota.client import FetcherInterface, FetchResponse, HttpxFetcher, UpdateManager


class RecordingFetcher(FetcherInterface):
    """The httpx fetcher, recording (url, request headers, status, answer headers)."""

    def __init__(self) -> None:
        self.inner = HttpxFetcher(timeout=30)
        self.answers: list[tuple[str, dict[str, str], int, dict[str, str]]] = []

    def _fetch(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> FetchResponse:
        response = self.inner._fetch(method, url, headers, body)
        if method == "GET":
            self.answers.append((url, dict(headers), response.status, dict(response.headers)))
        return response

    def close(self) -> None:
        self.inner.close()


@dataclass
class Devices:
    """Two devices running the old update, and the new update published after."""

    server: ServerProcess
    slug: str
    old_id: str
    new_id: str
    new_bundle: bytes
    dirs: tuple[Path, Path]


def manager(devices: Devices, data_dir: Path, fetcher: FetcherInterface) -> UpdateManager:
    return UpdateManager(
        devices.server.url,
        devices.slug,
        "production",
        "1",
        "android",
        data_dir,
        fetcher=fetcher,
        report_events=False,
        _sleep=lambda _s: None,
    )


@pytest.fixture(scope="module")
def devices(
    server: ServerProcess, fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Devices:
    slug = f"delta-sdk-{uuid.uuid4().hex[:8]}"
    dirs = (tmp_path_factory.mktemp("device-a"), tmp_path_factory.mktemp("device-b"))
    with server.client() as client:
        create_project(client, slug)
        old, _ = publish_export(
            client, slug, fixtures_dir / OLD_EXPORT, runtime_version="1", platforms=("android",)
        )
        old_id = updates_by_platform(old)["android"]["id"]
        partial = Devices(server, slug, old_id, "", b"", dirs)
        for data_dir in dirs:
            with manager(partial, data_dir, RecordingFetcher()) as device:
                result = device.check_for_update()
                assert result.update_id == old_id
                device.download_and_install_update(result)
                device.apply_update()
                device.launch()
                device.mark_launch_successful()
                assert device.current_update_id == old_id
        new, _ = publish_export(
            client, slug, fixtures_dir / NEW_EXPORT, runtime_version="1", platforms=("android",)
        )
        new_id = updates_by_platform(new)["android"]["id"]
        wait_for_patch(client, new_id, old_id)
    new_bundle = next((fixtures_dir / NEW_EXPORT / "bundles").glob("android-*.js")).read_bytes()
    return Devices(server, slug, old_id, new_id, new_bundle, dirs)


def launch_answers(
    fetcher: RecordingFetcher,
) -> list[tuple[dict[str, str], int, dict[str, str]]]:
    return [
        (req, status, resp) for url, req, status, resp in fetcher.answers if url.endswith(".js")
    ]


def update_to_new(devices: Devices, data_dir: Path, fetcher: RecordingFetcher) -> Path:
    with manager(devices, data_dir, fetcher) as device:
        result = device.check_for_update()
        assert result.update_id == devices.new_id
        installed = device.download_and_install_update(result)
        return installed.launch_asset


def test_sdk_applies_a_patch(devices: Devices) -> None:
    fetcher = RecordingFetcher()
    launch = update_to_new(devices, devices.dirs[0], fetcher)
    assert launch.read_bytes() == devices.new_bundle
    answers = launch_answers(fetcher)
    assert len(answers) == 1  # one request, answered with the patch
    request, status, response = answers[0]
    assert request["a-im"] == "bsdiff"
    assert request["expo-current-update-id"] == devices.old_id
    assert request["expo-requested-update-id"] == devices.new_id
    assert status == 226 and response["im"] == "bsdiff"
    assert int(response["content-length"]) < len(devices.new_bundle) // 10


def test_sdk_falls_back_to_the_full_bundle_when_the_patch_fails(devices: Devices) -> None:
    data_dir = devices.dirs[1]
    # The held base no longer matches what the server diffed from: the patched result
    # cannot hash to the manifest's launch asset.
    base = next((data_dir / "updates" / devices.old_id).rglob("*.js"))
    corrupted = bytearray(base.read_bytes())
    corrupted[1000:1010] = b"0123456789"
    base.unlink()  # a hard link of the cached blob: replace, do not write through
    base.write_bytes(bytes(corrupted))
    fetcher = RecordingFetcher()
    launch = update_to_new(devices, data_dir, fetcher)
    assert launch.read_bytes() == devices.new_bundle
    answers = launch_answers(fetcher)
    assert [status for _, status, _ in answers] == [226, 200]
    retry_request, _, retry_response = answers[1]
    assert "a-im" not in retry_request and "im" not in retry_response


def test_sdk_patches_from_its_embedded_bundle(
    devices: Devices, fixtures_dir: Path, tmp_path: Path
) -> None:
    """A fresh install running its embedded files gets the first update as a patch from
    the embedded bundle, once the build's bundle is registered."""
    embedded_id = str(uuid.uuid4())
    old_bundle = next((fixtures_dir / OLD_EXPORT / "bundles").glob("android-*.js"))
    with devices.server.client() as client:
        resp = client.post(
            f"/api/v1/projects/{devices.slug}/embedded",
            json={
                "platform": "android",
                "runtimeVersion": "1",
                "embeddedUpdateId": embedded_id,
                "sha256": sha256_hex(old_bundle.read_bytes()),
            },
        )
        assert resp.status_code == 201, resp.text
        wait_for_patch(client, devices.new_id, embedded_id)
    (tmp_path / "embedded").mkdir()
    shutil.copy(old_bundle, tmp_path / "embedded" / "index.js")
    fetcher = RecordingFetcher()
    with UpdateManager(
        devices.server.url,
        devices.slug,
        "production",
        "1",
        "android",
        tmp_path / "data",
        embedded_dir=tmp_path / "embedded",
        embedded_update_id=embedded_id,
        embedded_launch_asset="index.js",
        fetcher=fetcher,
        report_events=False,
    ) as device:
        result = device.check_for_update()
        assert result.update_id == devices.new_id
        installed = device.download_and_install_update(result)
    assert installed.launch_asset.read_bytes() == devices.new_bundle
    ((request, status, response),) = launch_answers(fetcher)
    assert request["expo-current-update-id"] == embedded_id
    assert request["expo-embedded-update-id"] == embedded_id
    assert status == 226 and response["expo-base-update-id"] == embedded_id
