"""Unit tests of the client SDK against an in-process fake server (no network, no sleeps)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import brotli
import httpx
import pytest

from lumora_ota.client import (
    AutoUpdateChecker,
    CheckResult,
    DownloadError,
    DownloadLengthError,
    DownloadProgress,
    HashMismatchError,
    HttpxFetcher,
    RetryPolicy,
    ServerResponseError,
    SignatureError,
    StaleAnswerError,
    UpdateManager,
)
from lumora_ota.client._internal import state as sm
from lumora_ota.client._internal.events import EventReporter
from lumora_ota.client._internal.fs import safe_join, validate_relative_path
from lumora_ota.client._internal.signature import parse_signature_header
from lumora_ota.signing import generate_signing_identity, load_signing_identity
from test_client_fakes import SERVER, FakeServer, make_manifest, sha, tree

V1 = {"main.py": b"print('v1')\n" * 20, "assets/logo.png": b"\x89PNG" + b"L" * 300}
V2 = {
    "main.py": b"print('v2')\n" * 25,
    "assets/logo.png": V1["assets/logo.png"],  # unchanged: served from the cache
    "assets/new.ttf": b"font" * 90,
}
EMBEDDED = {"main.py": b"print('embedded')\n"}


@pytest.fixture(scope="module")
def identity() -> Any:
    key_pem, cert_pem = generate_signing_identity("lumora-test")
    return load_signing_identity("main", key_pem, cert_pem), cert_pem


@pytest.fixture
def embedded(tmp_path: Path) -> Path:
    root = tmp_path / "embedded"
    root.mkdir()
    (root / "main.py").write_bytes(EMBEDDED["main.py"])
    return root


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


class Harness:
    """Builds managers over one data dir, as successive app launches would."""

    def __init__(self, tmp_path: Path, server: FakeServer, embedded: Path) -> None:
        self.data_dir = tmp_path / "data"
        self.server = server
        self.embedded = embedded
        self.errors: list[Exception] = []
        self.progress: list[DownloadProgress] = []
        self.available: list[CheckResult] = []
        self.delays: list[float] = []

    def manager(self, **kwargs: Any) -> UpdateManager:
        options: dict[str, Any] = {
            "embedded_dir": self.embedded,
            "fetcher": self.server,
            "on_error": self.errors.append,
            "on_download_progress": self.progress.append,
            "on_update_available": self.available.append,
            "_sleep": self.delays.append,
        }
        options.update(kwargs)
        return UpdateManager(SERVER, "proj", "production", "1", "ios", self.data_dir, **options)

    def install(self, manager: UpdateManager, update_id: str, files: dict[str, bytes]) -> None:
        self.server.publish(make_manifest(update_id, files, "main.py"), files)
        result = manager.check_for_update()
        assert result.update_available and result.update_id == update_id
        manager.download_and_install_update(result)
        manager.apply_update()


@pytest.fixture
def h(tmp_path: Path, server: FakeServer, embedded: Path) -> Harness:
    return Harness(tmp_path, server, embedded)


# ---------------------------------------------------------------- first install, launch


def test_fresh_install_launches_embedded(h: Harness) -> None:
    manager = h.manager()
    assert manager.launch() == h.embedded
    assert manager.current_update_id is None
    assert h.manager(embedded_dir=None).launch() is None


def test_no_update_available(h: Harness) -> None:
    result = h.manager().check_for_update()
    assert not result.update_available and result.manifest is None
    assert h.available == []
    body = h.server.check_bodies[0]
    assert body == {
        "projectId": "proj",
        "channel": "production",
        "platform": "ios",
        "runtimeVersion": "1",
        "deviceId": body["deviceId"],
    }


def test_device_id_is_random_and_persisted(h: Harness, tmp_path: Path) -> None:
    first = h.manager().device_id
    assert len(first) == 32
    assert h.manager().device_id == first
    assert (h.data_dir / "device-id").read_text() == first
    assert h.manager(device_id="given").device_id == "given"


def test_download_install_apply_launch(h: Harness) -> None:
    manager = h.manager()
    h.server.publish(make_manifest("u1", V1, "main.py"), V1, message="Better logo", mandatory=True)
    result = manager.check_for_update()
    assert result.update_available and result.is_mandatory and result.message == "Better logo"
    assert result.download_size == sum(len(v) for v in V1.values())
    assert h.available == [result]
    ready: list[Any] = []
    manager._on_update_ready = ready.append  # type: ignore[assignment]
    installed = manager.download_and_install_update(result)
    assert ready == [installed]
    assert installed.launch_asset == installed.directory / "main.py"
    assert tree(installed.directory) == V1
    # installed but not applied: still the embedded files
    assert h.manager().launch() == h.embedded
    manager.apply_update()
    again = h.manager()
    assert again.launch() == h.data_dir / "updates" / "u1"
    assert again.current_update_id == "u1"
    assert again.launched_update is not None and again.launched_update.message == "Better logo"
    # progress: from 0 to the total, monotonic, ending at 100 %
    done = [p.bytes_done for p in h.progress]
    assert done == sorted(done) and h.progress[-1].percentage == 100.0
    assert {p.bytes_total for p in h.progress} == {result.download_size}
    assert h.errors == []


def test_asks_for_compressed_assets(h: Harness) -> None:
    h.install(h.manager(), "u1", V1)
    gets = [headers for method, _url, headers in h.server.requests if method == "GET"]
    assert gets and all(g["accept-encoding"] == "br, gzip" for g in gets)


def test_cached_assets_are_not_downloaded_again(h: Harness) -> None:
    manager = h.manager()
    h.install(manager, "u1", V1)
    manager.launch()
    manager.mark_launch_successful()
    before = len(h.server.asset_requests())
    h.server.publish(make_manifest("u2", V2, "main.py"), V2)
    result = manager.check_for_update()
    assert result.download_size == len(V2["main.py"]) + len(V2["assets/new.ttf"])
    installed = manager.download_and_install_update(result)
    fetched = h.server.asset_requests()[before:]
    assert sorted(u.rsplit("/", 1)[1].split(".")[0] for u in fetched) == sorted(
        [sha(V2["main.py"]), sha(V2["assets/new.ttf"])]
    )
    assert tree(installed.directory) == V2
    # one blob per content: the shared logo is stored once
    assert (h.data_dir / "blobs" / sha(V1["assets/logo.png"])).stat().st_nlink >= 3


def test_identical_files_under_two_paths(h: Harness) -> None:
    files = {"main.py": b"same" * 10, "copy.py": b"same" * 10}
    manager = h.manager()
    h.install(manager, "u1", files)
    assert len(h.server.asset_requests()) == 1
    assert tree(h.data_dir / "updates" / "u1") == files


def test_reinstalling_an_installed_update_downloads_nothing(h: Harness) -> None:
    manager = h.manager()
    h.server.publish(make_manifest("u1", V1, "main.py"), V1)
    manager.download_and_install_update(manager.check_for_update())  # ready, not applied
    count = len(h.server.asset_requests())
    again = h.manager()
    result = again.check_for_update()
    assert result.update_available and result.download_size == 0
    assert again.download_and_install_update(result).update_id == "u1"
    assert len(h.server.asset_requests()) == count
    again.apply_update()
    # applied and waiting for the next launch: not offered again
    assert not again.check_for_update().update_available


# ---------------------------------------------------------------- bounded, verified downloads


def test_body_longer_than_manifest_size_is_refused(h: Harness) -> None:
    manager = h.manager()
    manifest = make_manifest("u1", V1, "main.py")
    h.server.publish(manifest, V1)
    h.server.extra_bytes[manifest["launchAsset"]["url"]] = b"x"
    result = manager.check_for_update()
    with pytest.raises(DownloadLengthError):
        manager.download_and_install_update(result)
    assert not (h.data_dir / "blobs" / sha(V1["main.py"])).exists()
    assert list((h.data_dir / "downloads").iterdir()) == []
    assert h.server.asset_requests().count(manifest["launchAsset"]["url"]) == 1
    assert h.manager().launch() == h.embedded
    assert isinstance(h.errors[-1], DownloadLengthError)


def test_hash_mismatch_is_refused(h: Harness) -> None:
    manager = h.manager()
    manifest = make_manifest("u1", V1, "main.py")
    h.server.publish(manifest, V1)
    h.server.corrupt.add(manifest["assets"][0]["url"])
    with pytest.raises(HashMismatchError):
        manager.download_and_install_update(manager.check_for_update())
    assert not (h.data_dir / "updates" / "u1").exists()
    assert h.manager().launch() == h.embedded
    h.manager().flush_events()
    manager.flush_events()
    assert [e["type"] for e in h.server.events] == ["download_failed"]


def test_corrupt_cached_blob_is_downloaded_again(h: Harness) -> None:
    manager = h.manager()
    h.install(manager, "u1", V1)
    blob = h.data_dir / "blobs" / sha(V1["main.py"])
    (h.data_dir / "updates" / "u1" / "main.py").unlink()  # break the hard link first
    blob.write_bytes(b"X" * len(V1["main.py"]))
    before = len(h.server.asset_requests())
    h.server.publish(
        make_manifest("u2", {**V1, "extra.txt": b"e"}, "main.py"), {**V1, "extra.txt": b"e"}
    )
    installed = manager.download_and_install_update(manager.check_for_update())
    assert len(h.server.asset_requests()) - before == 2  # extra.txt + the corrupt main.py
    assert (installed.directory / "main.py").read_bytes() == V1["main.py"]


def test_interrupted_download_resumes_with_range(h: Harness) -> None:
    manager = h.manager()
    manifest = make_manifest("u1", V1, "main.py")
    url = manifest["launchAsset"]["url"]
    h.server.publish(manifest, V1)
    h.server.cut_after[url] = 100
    installed = manager.download_and_install_update(manager.check_for_update())
    gets = [(u, hd) for m, u, hd in h.server.requests if m == "GET" and u == url]
    assert len(gets) == 2
    assert "range" not in gets[0][1]
    assert gets[1][1]["range"] == "bytes=100-"  # every byte received was kept
    assert gets[1][1]["accept-encoding"] == "identity"
    assert tree(installed.directory) == V1
    assert len(h.delays) == 1  # one backoff between the two attempts


def test_resume_restarts_when_server_ignores_range(h: Harness) -> None:
    manager = h.manager()
    manifest = make_manifest("u1", V1, "main.py")
    url = manifest["launchAsset"]["url"]
    h.server.publish(manifest, V1)
    h.server.cut_after[url] = 50
    h.server.ignore_range = True
    installed = manager.download_and_install_update(manager.check_for_update())
    assert tree(installed.directory) == V1


def test_resume_with_a_wrong_content_range_starts_over(h: Harness) -> None:
    manager = h.manager()
    manifest = make_manifest("u1", V1, "main.py")
    url = manifest["launchAsset"]["url"]
    h.server.publish(manifest, V1)
    h.server.cut_after[url] = 50
    h.server.wrong_content_range = True
    installed = manager.download_and_install_update(manager.check_for_update())
    assert tree(installed.directory) == V1
    gets = [hd for m, u, hd in h.server.requests if m == "GET" and u == url]
    assert [g.get("range") for g in gets] == [None, "bytes=50-", None]


def test_partial_file_survives_restart_and_is_resumed(h: Harness) -> None:
    manifest = make_manifest("u1", V1, "main.py")
    url = manifest["launchAsset"]["url"]
    h.server.publish(manifest, V1)
    h.server.cut_after[url] = 64
    manager = h.manager(retry=RetryPolicy(attempts=1))
    with pytest.raises(DownloadError):
        manager.download_and_install_update(manager.check_for_update())
    part = h.data_dir / "downloads" / f"{sha(V1['main.py'])}.part"
    assert part.read_bytes() == V1["main.py"][:64]
    second = h.manager()
    second.download_and_install_update(second.check_for_update())
    last = [hd for m, u, hd in h.server.requests if u == url][-1]
    assert last["range"] == "bytes=64-"
    assert not part.exists()


def test_stale_partial_file_with_wrong_bytes_is_discarded(h: Harness) -> None:
    manifest = make_manifest("u1", V1, "main.py")
    h.server.publish(manifest, V1)
    part = h.data_dir / "downloads" / f"{sha(V1['main.py'])}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage!" * 4)
    manager = h.manager()
    installed = manager.download_and_install_update(manager.check_for_update())
    assert tree(installed.directory) == V1


def test_transient_errors_are_retried_with_backoff(h: Harness) -> None:
    manager = h.manager(retry=RetryPolicy(attempts=4, base_delay=1.0, max_delay=10.0))
    manifest = make_manifest("u1", V1, "main.py")
    url = manifest["launchAsset"]["url"]
    h.server.publish(manifest, V1)
    h.server.statuses[url] = [503, 502, 429]
    manager.download_and_install_update(manager.check_for_update())
    assert len(h.delays) == 3
    for attempt, delay in enumerate(h.delays, start=1):
        ceiling = min(10.0, 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling


def test_retries_are_bounded(h: Harness) -> None:
    manager = h.manager(retry=RetryPolicy(attempts=3))
    manifest = make_manifest("u1", V1, "main.py")
    url = manifest["launchAsset"]["url"]
    h.server.publish(manifest, V1)
    h.server.statuses[url] = [503] * 10
    with pytest.raises(DownloadError, match="giving up after 3 attempts"):
        manager.download_and_install_update(manager.check_for_update())
    assert h.server.asset_requests().count(url) == 3


def test_not_found_is_not_retried(h: Harness) -> None:
    manager = h.manager()
    manifest = make_manifest("u1", V1, "main.py")
    url = manifest["launchAsset"]["url"]
    h.server.publish(manifest, V1)
    h.server.statuses[url] = [404]
    with pytest.raises(DownloadError, match="404"):
        manager.download_and_install_update(manager.check_for_update())
    assert h.delays == []


@pytest.mark.parametrize(
    "path", ["../evil.py", "/etc/passwd", "a/../../b", "a\\b", "C:/x", "a//b", "./a", "", "a\x00"]
)
def test_unsafe_paths_are_rejected_before_download(h: Harness, path: str) -> None:
    manifest = make_manifest("u1", V1, "main.py")
    manifest["assets"][0]["path"] = path
    h.server.publish(make_manifest("u1", V1, "main.py"), V1)
    h.server.offer.manifest = manifest
    with pytest.raises(ServerResponseError, match="unsafe asset path"):
        h.manager().check_for_update()
    assert h.server.asset_requests() == []


def test_safe_join_stays_inside(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a/b.txt") == tmp_path / "a" / "b.txt"
    assert validate_relative_path("bundles/ios-1.js") == "bundles/ios-1.js"
    (tmp_path / "link").symlink_to("/")
    with pytest.raises(ServerResponseError):
        safe_join(tmp_path, "link/etc/passwd")


def test_manifest_with_inconsistent_hash_is_rejected(h: Harness) -> None:
    manifest = make_manifest("u1", V1, "main.py")
    manifest["launchAsset"]["hash"] = manifest["assets"][0]["hash"]
    h.server.offer.manifest = manifest
    with pytest.raises(ServerResponseError, match="disagree"):
        h.manager().check_for_update()


# ---------------------------------------------------------------- rollback state machine


def test_crash_loop_rolls_back_to_embedded_and_skips_update(h: Harness) -> None:
    h.install(h.manager(), "u1", V1)
    first = h.manager()
    assert first.launch() == h.data_dir / "updates" / "u1"  # never confirmed: "crashes"
    second = h.manager()
    assert second.launch() == h.embedded
    assert second.failed_update_ids == ("u1",)
    # the server still offers u1: the client asks it to skip, and filters it locally
    result = second.check_for_update()
    assert not result.update_available
    assert h.server.check_bodies[-1]["recentFailedUpdateIds"] == ["u1"]
    assert second.flush_events()
    types = [(e["type"], e.get("updateId")) for e in h.server.events]
    assert ("launch_failure", "u1") in types and ("rollback", "u1") in types
    rollback = next(e for e in h.server.events if e["type"] == "rollback")
    assert "toUpdateId" not in rollback  # to the embedded files
    # the failed update is garbage once the fallback is confirmed
    second.mark_launch_successful()
    assert not (h.data_dir / "updates" / "u1").exists()
    assert not (h.data_dir / "blobs" / sha(V1["main.py"])).exists()


def test_failed_update_falls_back_to_previous_good(h: Harness) -> None:
    manager = h.manager()
    h.install(manager, "u1", V1)
    manager.launch()
    manager.mark_launch_successful()
    h.install(manager, "u2", V2)
    assert h.manager().launch() == h.data_dir / "updates" / "u2"
    after_crash = h.manager()
    assert after_crash.launch() == h.data_dir / "updates" / "u1"
    assert tree(h.data_dir / "updates" / "u1") == V1
    assert after_crash.current_update_id == "u1"
    after_crash.flush_events()
    rollback = next(e for e in h.server.events if e["type"] == "rollback")
    assert rollback["updateId"] == "u2" and rollback["toUpdateId"] == "u1"


def test_confirmed_update_keeps_running(h: Harness) -> None:
    h.install(h.manager(), "u1", V1)
    first = h.manager()
    first.launch()
    first.mark_launch_successful()
    for _ in range(3):
        assert h.manager().launch() == h.data_dir / "updates" / "u1"
    first.flush_events()
    assert [e["type"] for e in h.server.events].count("launch_success") == 1


def test_max_failed_launches_allows_several_tries(h: Harness) -> None:
    h.install(h.manager(), "u1", V1)
    assert h.manager(max_failed_launches=2).launch() == h.data_dir / "updates" / "u1"
    assert h.manager(max_failed_launches=2).launch() == h.data_dir / "updates" / "u1"
    assert h.manager(max_failed_launches=2).launch() == h.embedded


def test_explicit_rollback(h: Harness) -> None:
    manager = h.manager()
    h.install(manager, "u1", V1)
    manager.launch()
    manager.mark_launch_successful()
    assert manager.rollback() == h.embedded
    assert manager.failed_update_ids == ("u1",)
    assert h.manager().launch() == h.embedded


def test_roll_back_to_embedded_directive(h: Harness) -> None:
    manager = h.manager()
    h.install(manager, "u1", V1)
    manager.launch()
    manager.mark_launch_successful()
    h.server.offer.manifest = None
    h.server.offer.directive = {
        "type": "rollBackToEmbedded",
        "parameters": {"commitTime": "2026-11-26T21:00:00.000Z"},
    }
    result = manager.check_for_update()
    assert not result.update_available and result.directive == "rollBackToEmbedded"
    next_run = h.manager()
    assert next_run.launch() == h.embedded
    assert next_run.failed_update_ids == ()  # not a failure: a decision of the publisher
    next_run.flush_events()
    assert any(e["type"] == "rollback" and e["updateId"] == "u1" for e in h.server.events)


def test_garbage_collection_keeps_running_and_last_good(h: Harness) -> None:
    manager = h.manager(keep_updates=1)
    versions = {f"u{i}": {"main.py": f"v{i}".encode() * 10, "common": b"c" * 10} for i in range(4)}
    for update_id, files in versions.items():
        h.install(manager, update_id, files)
        manager = h.manager(keep_updates=1)
        manager.launch()
        manager.mark_launch_successful()
    assert sorted(p.name for p in (h.data_dir / "updates").iterdir()) == ["u3"]
    blobs = sorted(p.name for p in (h.data_dir / "blobs").iterdir())
    assert blobs == sorted({sha(b"v3" * 10), sha(b"c" * 10)})
    # an unconfirmed new update keeps the last good one alive
    h.install(manager, "u4", {"main.py": b"v4"})
    manager = h.manager(keep_updates=0)
    manager.launch()
    manager._collect_garbage()
    assert sorted(p.name for p in (h.data_dir / "updates").iterdir()) == ["u3", "u4"]


def test_state_machine_invariants_over_random_histories() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    operations = st.lists(
        st.sampled_from(["install", "apply", "launch", "confirm", "rollback", "directive"]),
        max_size=40,
    )

    @settings(max_examples=300, deadline=None)
    @given(operations, st.integers(1, 3))
    def check(ops: list[str], max_failed: int) -> None:
        state = sm.ClientState()
        counter = 0
        available = lambda u: u in state.installed  # noqa: E731
        for op in ops:
            if op == "install":
                counter += 1
                info = sm.InstalledInfo("main.py", (), "")
                state = sm.record_installed(state, f"u{counter}", info)
            elif op == "apply":
                state = sm.apply_ready(state)
            elif op == "launch":
                decision = sm.begin_launch(state, max_failed, available)
                state = decision.state
                assert decision.update_id is None or decision.update_id not in state.failed
                assert decision.update_id is None or decision.update_id in state.installed
            elif op == "confirm":
                state = sm.confirm_launch(state)[0]
            elif op == "rollback":
                state = sm.rollback_current(state, available)[0]
            else:
                state = sm.request_embedded(state)
            assert state.current is None or state.current not in state.failed
            assert set(state.good).isdisjoint(state.failed)
            assert sm.ClientState.from_json(state.to_json()) == state
            keep = sm.updates_to_keep(state, 0)
            assert state.current is None or state.current in keep
            assert not state.good or state.good[-1] in keep

    check()


# ---------------------------------------------------------------- signatures


def test_signed_manifest_is_verified(h: Harness, identity: Any) -> None:
    signer, cert_pem = identity
    h.server.signer = signer
    manager = h.manager(certificate=cert_pem)
    h.server.publish(make_manifest("u1", V1, "main.py"), V1)
    result = manager.check_for_update()
    assert result.update_available and result.signature_verified
    assert h.server.check_bodies[-1]["signed"] is True
    manager.download_and_install_update(result)


def test_certificate_from_a_file(h: Harness, identity: Any, tmp_path: Path) -> None:
    signer, cert_pem = identity
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    h.server.signer = signer
    h.server.publish(make_manifest("u1", V1, "main.py"), V1)
    assert h.manager(certificate=str(tmp_path / "cert.pem")).check_for_update().signature_verified


@pytest.mark.parametrize("mode", ["none", "tampered", "other-key"])
def test_unsigned_or_bad_signature_is_rejected_before_download(
    h: Harness, identity: Any, mode: str
) -> None:
    signer, cert_pem = identity
    if mode == "other-key":
        key_pem, other_cert = generate_signing_identity("other")
        h.server.signer = load_signing_identity("main", key_pem, other_cert)
    else:
        h.server.signer = signer
        h.server.sign_mode = mode
    h.server.publish(make_manifest("u1", V1, "main.py"), V1)
    manager = h.manager(certificate=cert_pem)
    with pytest.raises(SignatureError):
        manager.check_for_update()
    assert isinstance(h.errors[-1], SignatureError)
    assert h.server.asset_requests() == []
    assert h.available == []


def test_signed_directive_is_verified(h: Harness, identity: Any) -> None:
    signer, cert_pem = identity
    h.server.signer = signer
    h.server.offer.directive = {"type": "rollBackToEmbedded", "parameters": {}}
    assert h.manager(certificate=cert_pem).check_for_update().directive == "rollBackToEmbedded"
    h.server.sign_mode = "none"
    with pytest.raises(SignatureError):
        h.manager(certificate=cert_pem).check_for_update()


def test_signature_header_parsing() -> None:
    assert parse_signature_header('sig="a+b/c=", keyid="main", alg="rsa-v1_5-sha256"') == {
        "sig": "a+b/c=",
        "keyid": "main",
        "alg": "rsa-v1_5-sha256",
    }
    with pytest.raises(SignatureError):
        parse_signature_header("sig=")


# ---------------------------------------------------------------- fetcher, events, auto-checker


def test_httpx_fetcher_decodes_br_and_gzip() -> None:
    payload = b"hello brotli " * 100

    def handler(request: httpx.Request) -> httpx.Response:
        encoding = request.headers["accept-encoding"].split(",")[0].strip()
        body = brotli.compress(payload) if encoding == "br" else gzip.compress(payload)
        return httpx.Response(200, content=body, headers={"content-encoding": encoding})

    fetcher = HttpxFetcher(client=httpx.Client(transport=httpx.MockTransport(handler)))
    for encoding in ("br", "gzip"):
        with fetcher.open("GET", "http://x/a", {"accept-encoding": encoding}) as response:
            assert b"".join(response.chunks) == payload


def test_check_against_unreachable_server_reports_error(h: Harness) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    fetcher = HttpxFetcher(client=httpx.Client(transport=httpx.MockTransport(handler)))
    manager = h.manager(fetcher=fetcher, report_events=False)
    from lumora_ota.client import NetworkError

    with pytest.raises(NetworkError):
        manager.check_for_update()
    assert isinstance(h.errors[0], NetworkError)


def test_events_are_batched_and_failures_swallowed(server: FakeServer) -> None:
    errors: list[Exception] = []
    reporter = EventReporter(
        server,
        f"{SERVER}/api/v1/events",
        device_id="d",
        project_id="p",
        on_error=errors.append,
        retry_delay=0.0,
        linger=0.05,
    )
    for i in range(5):
        reporter.report("install", f"u{i}")
    assert reporter.flush(5)
    assert [e["updateId"] for e in server.events] == [f"u{i}" for i in range(5)]
    event_posts = [u for m, u, _ in server.requests if u.endswith("/events")]
    assert len(event_posts) < 5
    server.events_down = True
    reporter.report("launch_success", "u9")
    assert reporter.flush(5)
    assert reporter.dropped == 1 and errors
    reporter.close()


def test_event_queue_is_bounded(server: FakeServer) -> None:
    reporter = EventReporter(
        server,
        f"{SERVER}/api/v1/events",
        device_id="d",
        project_id="p",
        on_error=lambda e: None,
        max_queue=3,
        linger=0.5,
    )
    for i in range(10):
        reporter.report("install", f"u{i}")
    assert reporter.dropped >= 6
    reporter.close()


def test_callback_errors_do_not_break_the_sdk(h: Harness) -> None:
    def explode(_value: object) -> None:
        raise RuntimeError("app bug")

    manager = h.manager(on_update_available=explode, on_download_progress=explode, on_error=explode)
    h.install(manager, "u1", V1)
    assert h.manager().launch() == h.data_dir / "updates" / "u1"


def test_auto_update_checker_downloads_and_survives_errors(h: Harness) -> None:
    manager = h.manager()
    h.server.publish(make_manifest("u1", V1, "main.py"), V1)
    checker = AutoUpdateChecker(manager, interval=0.05, jitter=0.5)
    with checker:
        assert checker.wait_for_checks(1, timeout=10)
    assert manager.ready_update is not None and manager.ready_update.update_id == "u1"
    h.server.offer.manifest = {"id": "../bad"}
    with AutoUpdateChecker(manager, interval=0.01) as failing:
        assert failing.wait_for_checks(3, timeout=10)
    assert any(isinstance(e, ServerResponseError) for e in h.errors)
    delays = [AutoUpdateChecker(manager, interval=100, jitter=0.2).next_delay() for _ in range(50)]
    assert all(80 <= d <= 120 for d in delays) and len(set(delays)) > 1


def test_sdk_imports_without_server_dependencies() -> None:
    code = (
        "import sys, lumora_ota.client, lumora_ota.client.ui_tk\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'fastapi', "
        "'starlette', 'uvicorn', 'alembic') or m.startswith('lumora_ota.server')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_state_file_is_valid_json(h: Harness) -> None:
    h.install(h.manager(), "u1", V1)
    state = json.loads((h.data_dir / "state.json").read_text())
    assert state["ready"] is None and state["pending"] == "u1"
    assert state["installed"]["u1"]["launchAsset"] == "main.py"


# ---------------------------------------------------------------- binary upgrades (issue 14)


@pytest.mark.parametrize("confirmed", [True, False])
def test_binary_upgrade_launches_the_new_embedded_files(
    h: Harness, tmp_path: Path, confirmed: bool
) -> None:
    """An update installed for runtime 1 never launches in a binary of runtime 1.1: the new
    binary's embedded files run and the stale update is cleaned up (expo-updates' launcher
    only considers updates of its own runtime version)."""
    old = h.manager()
    h.install(old, "u1", V1)
    assert h.manager().launch() == h.data_dir / "updates" / "u1"
    if confirmed:
        h.manager().mark_launch_successful()
    new_embedded = tmp_path / "embedded-1.1"
    new_embedded.mkdir()
    (new_embedded / "main.py").write_bytes(b"print('1.1')\n")
    upgraded = UpdateManager(
        SERVER, "proj", "production", "1.1", "ios", h.data_dir,
        embedded_dir=new_embedded, fetcher=h.server, on_error=h.errors.append,
    )  # fmt: skip
    assert upgraded.launch() == new_embedded
    assert upgraded.current_update_id is None
    upgraded.mark_launch_successful()
    assert not (h.data_dir / "updates" / "u1").exists()
    assert "u1" not in upgraded.failed_update_ids  # it did not fail; it is just stale
    # A check from the new binary asks for its own runtime version.
    upgraded.check_for_update()
    assert h.server.check_bodies[-1]["runtimeVersion"] == "1.1"
    assert h.errors == []


@pytest.mark.parametrize("timestamp_key", [False, True])
def test_a_signed_rollback_may_go_back_but_not_on_the_timestamp_key_alone(
    h: Harness, identity: Any, timestamp_key: bool
) -> None:
    """An update older than the running one is taken only when the answer is signed as a
    rollback, and — with a separate timestamp key (publisher-held signing) — never: the
    server's online key alone cannot take devices back (issue 20)."""
    signer, cert_pem = identity
    h.server.signer = signer
    extra = {"freshness_certificate": cert_pem} if timestamp_key else {}
    manager = h.manager(certificate=cert_pem, **extra)
    newer = {**make_manifest("u2", V2, "main.py"), "createdAt": "2026-11-27T00:00:00.000Z"}
    h.server.publish(newer, V2)
    manager.download_and_install_update(manager.check_for_update())
    manager.apply_update()
    manager = h.manager(certificate=cert_pem, **extra)
    manager.launch()
    h.server.publish(make_manifest("u1", V1, "main.py"), V1)  # created earlier
    with pytest.raises(StaleAnswerError, match="not a signed rollback"):
        manager.check_for_update()
    h.server.rollback = True
    if timestamp_key:
        with pytest.raises(StaleAnswerError):
            manager.check_for_update()
    else:
        assert manager.check_for_update().update_id == "u1"
