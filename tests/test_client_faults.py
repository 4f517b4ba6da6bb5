"""Fault injection: the SDK is interrupted at EVERY write point of download and install.

A counting file system first records the N mutating operations (write, fsync, rename, link,
mkdir, unlink, rmtree) of a complete check-download-install-apply of update u2 on a device
running u1. Then, for every k in 1..N, a fresh copy of the device 'dies' at the k-th
operation (and does nothing after it), and the next launch must run either u1 or u2 — each
complete, byte for byte — and the device must still be able to finish installing u2.
The same is done for every byte offset at which the connection can break mid-download.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from lumora_ota.client import UpdateManager
from test_client_fakes import (
    SERVER,
    CountingFileSystem,
    FakeServer,
    SimulatedCrash,
    make_manifest,
    tree,
)

U1 = {"main.py": b"print('one')\n" * 4, "assets/a.png": b"A" * 40, "lib/util.py": b"u = 1\n"}
U2 = {
    "main.py": b"print('two')\n" * 5,
    "assets/a.png": U1["assets/a.png"],  # cached
    "assets/b.ttf": b"B" * 70,
    "lib/deep/x.py": b"x = 2\n" * 3,
}


def manager_for(data_dir: Path, server: FakeServer, **kwargs: Any) -> UpdateManager:
    return UpdateManager(
        SERVER,
        "proj",
        "production",
        "1",
        "ios",
        data_dir,
        embedded_dir=data_dir.parent / "embedded",
        fetcher=server,
        report_events=False,
        _sleep=lambda _s: None,
        **kwargs,
    )


def update_to_u2(manager: UpdateManager) -> None:
    result = manager.check_for_update()
    assert result.update_id == "u2"
    manager.download_and_install_update(result)
    manager.apply_update()


@pytest.fixture(scope="module")
def base_device(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FakeServer]:
    """A device data dir running a confirmed u1, and a server offering u2."""
    root = tmp_path_factory.mktemp("base")
    (root / "embedded").mkdir()
    (root / "embedded" / "main.py").write_bytes(b"print('embedded')")
    server = FakeServer(chunk_size=8)
    server.publish(make_manifest("u1", U1, "main.py"), U1)
    first = manager_for(root / "data", server)
    first.download_and_install_update(first.check_for_update())
    first.apply_update()
    running = manager_for(root / "data", server)
    running.launch()
    running.mark_launch_successful()
    server.publish(make_manifest("u2", U2, "main.py"), U2)
    return root, server


def copy_device(base: Path, target: Path) -> Path:
    shutil.copytree(base / "embedded", target / "embedded")
    shutil.copytree(base / "data", target / "data")
    return target / "data"


def launched_files(data_dir: Path, server: FakeServer, *, confirm: bool = True) -> dict[str, bytes]:
    """What the next app start loads; the app then confirms it works (like a real start)."""
    manager = manager_for(data_dir, server)
    files = tree(manager.launch())
    if confirm:
        manager.mark_launch_successful()
    return files


def test_every_file_system_operation_of_an_update(
    base_device: tuple[Path, FakeServer], tmp_path: Path
) -> None:
    base, server = base_device
    counter = CountingFileSystem()
    clean = copy_device(base, tmp_path / "clean")
    update_to_u2(manager_for(clean, server, _filesystem=counter))
    total = counter.count
    kinds = {op for op, _ in counter.log}
    assert {"write", "fsync", "fsync_dir", "replace", "link", "mkdir"} <= kinds
    assert total > 40  # chunked writes of every downloaded byte, links, renames, state
    assert launched_files(clean, server) == U2

    outcomes = {"u1": 0, "u2": 0}
    for k in range(1, total + 1):
        data_dir = copy_device(base, tmp_path / f"crash-{k}")
        with pytest.raises(SimulatedCrash):
            update_to_u2(manager_for(data_dir, server, _filesystem=CountingFileSystem(crash_at=k)))
        files = launched_files(data_dir, server)
        assert files in (U1, U2), f"crash at operation {k} ({counter.log[k - 1]}) left {files}"
        outcomes["u1" if files == U1 else "u2"] += 1
        # the device recovers: the next attempt completes (resuming what was kept)
        recovering = manager_for(data_dir, server)
        if files == U1:
            update_to_u2(recovering)
        assert launched_files(data_dir, server) == U2
        shutil.rmtree(data_dir.parent)
    # interrupted before the final state write: still u1; only the last operations yield u2
    assert outcomes["u1"] > 0 and outcomes["u2"] > 0


def test_every_launch_and_confirm_operation(
    base_device: tuple[Path, FakeServer], tmp_path: Path
) -> None:
    """Crashing while launching/confirming a freshly applied update never breaks launch."""
    base, server = base_device
    prepared = copy_device(base, tmp_path / "prepared")
    update_to_u2(manager_for(prepared, server))
    counter = CountingFileSystem()
    clean = copy_device(prepared.parent, tmp_path / "clean")
    measuring = manager_for(clean, server, _filesystem=counter)
    measuring.launch()
    measuring.mark_launch_successful()
    total = counter.count
    assert total >= 4
    for k in range(1, total + 1):
        data_dir = copy_device(prepared.parent, tmp_path / f"crash-{k}")
        with pytest.raises(SimulatedCrash):
            dying = manager_for(data_dir, server, _filesystem=CountingFileSystem(crash_at=k))
            dying.launch()
            dying.mark_launch_successful()
        assert launched_files(data_dir, server) in (U1, U2)
        shutil.rmtree(data_dir.parent)


def test_connection_broken_at_every_byte_offset(
    base_device: tuple[Path, FakeServer], tmp_path: Path
) -> None:
    base, server = base_device
    manifest = server.offer.manifest
    assert manifest is not None
    url = manifest["launchAsset"]["url"]
    size = manifest["launchAsset"]["size"]
    for cut in range(size):
        data_dir = copy_device(base, tmp_path / f"cut-{cut}")
        server.cut_after[url] = cut
        before = len(server.requests)
        update_to_u2(manager_for(data_dir, server))
        gets = [hd for method, u, hd in server.requests[before:] if method == "GET" and u == url]
        assert len(gets) == 2
        assert gets[1].get("range") == (f"bytes={cut}-" if cut else None)
        assert launched_files(data_dir, server) == U2
        shutil.rmtree(data_dir.parent)
