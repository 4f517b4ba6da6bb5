"""The SDK's Tk dialogs under a virtual X server (Xvfb), with a screenshot in test-artifacts/.

Skipped, with the reason, when tkinter, Xvfb or xwd is missing (Debian: xvfb, x11-apps).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from harness import REPO_ROOT
from lumora_ota.client import CheckResult, DownloadProgress

ARTIFACTS = REPO_ROOT / "test-artifacts"

tkinter = pytest.importorskip("tkinter", reason="this Python has no tkinter")
if shutil.which("Xvfb") is None or shutil.which("xwd") is None:
    pytest.skip("Xvfb and xwd are needed (apt-get install xvfb x11-apps)", allow_module_level=True)


@pytest.fixture(scope="module")
def display(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Xvfb display, started with -displayfd so no number is guessed."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1024x640x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with open(read_fd, "rb") as pipe:
        number = pipe.readline().strip().decode()
    if not number:
        proc.kill()
        pytest.skip("Xvfb did not start")
    yield f":{number}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def root(display: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("DISPLAY", display)
    tk_root = tkinter.Tk()
    tk_root.geometry("1024x640+0+0")
    tk_root.configure(background="#dfe6ee")
    yield tk_root
    tk_root.destroy()


def pump(root: Any, until: Any, timeout: float = 10.0) -> None:
    """Run the Tk event loop until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "the UI never reached the expected state"
        root.update()


def result(mandatory: bool) -> CheckResult:
    return CheckResult(
        update_available=True,
        is_mandatory=mandatory,
        message="• New dashboard\n• Faster start-up\n• Fixes a crash when offline",
        download_size=1_560_000,
    )


def test_update_available_dialog_buttons_follow_mandatory(root: Any) -> None:
    from lumora_ota.client.ui_tk import UpdateAvailableDialog

    optional = UpdateAvailableDialog(result(False), root)
    assert set(optional.buttons) == {"later", "update"}
    assert optional.notes.get("1.0", "end").startswith("• New dashboard")
    optional.window.destroy()
    mandatory = UpdateAvailableDialog(result(True), root)
    assert set(mandatory.buttons) == {"update"}
    # closing the window does not dismiss a mandatory update
    root.tk.call(mandatory.window.protocol("WM_DELETE_WINDOW"))
    assert mandatory.window.winfo_exists() and mandatory.choice is None
    root.after(50, mandatory.buttons["update"].invoke)
    assert mandatory.show() is True


def test_update_ready_prompt(root: Any) -> None:
    from lumora_ota.client.ui_tk import UpdateReadyDialog

    later = UpdateReadyDialog(root)
    root.after(50, later.buttons["later"].invoke)
    assert later.show() is False
    restart = UpdateReadyDialog(root, mandatory=True)
    assert set(restart.buttons) == {"restart"}
    root.after(50, restart.buttons["restart"].invoke)
    assert restart.show() is True


def test_dialogs_screenshot(root: Any) -> None:
    from lumora_ota.client.ui_tk import ProgressWindow, UpdateAvailableDialog, UpdateReadyDialog

    available = UpdateAvailableDialog(result(False), root)
    available.window.geometry("+20+20")
    progress = ProgressWindow(root)
    progress.window.geometry("+560+20")
    ready = UpdateReadyDialog(root)
    ready.window.geometry("+560+200")
    # progress arrives from a download thread
    worker = threading.Thread(
        target=lambda: [
            progress.report(DownloadProgress(n, 1_560_000)) for n in (0, 400_000, 1_014_000)
        ]
    )
    worker.start()
    worker.join()
    pump(root, lambda: progress.last is not None and progress.last.bytes_done == 1_014_000)
    assert progress.bar["value"] == pytest.approx(65.0)
    assert "65 %" in progress.label["text"]
    windows = (available.window, progress.window, ready.window)
    for window in windows:
        window.lift()
    pump(root, lambda: all(w.winfo_viewable() for w in windows))
    # Let the mapped windows handle their Expose events (drawing) before the capture.
    for _ in range(20):
        root.update()
        root.tk.call("after", 10)
    png = screenshot(_display_of(root))
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "client-tk-dialogs.png"
    path.write_bytes(png)
    assert png.startswith(b"\x89PNG") and len(png) > 2000


def _display_of(root: Any) -> str:
    return str(root.tk.call("winfo", "screen", "."))


def screenshot(display: str) -> bytes:
    """The whole X screen as PNG (xwd dump converted with the standard library)."""
    dump = subprocess.run(
        ["xwd", "-root", "-silent", "-display", display], capture_output=True, check=True
    ).stdout
    return xwd_to_png(dump)


def xwd_to_png(dump: bytes) -> bytes:
    """Convert a 24/32-bit TrueColor ZPixmap XWD dump to PNG."""
    fields = struct.unpack(">25I", dump[:100])
    header_size, width, height = fields[0], fields[4], fields[5]
    byte_order, bits_per_pixel, bytes_per_line = fields[7], fields[11], fields[12]
    ncolors = fields[19]
    assert bits_per_pixel == 32, f"unsupported XWD depth {bits_per_pixel}"
    pixels = dump[header_size + 12 * ncolors :]
    rows = bytearray()
    for y in range(height):
        line = pixels[y * bytes_per_line : y * bytes_per_line + width * 4]
        rgb = bytearray(width * 3)
        if byte_order == 0:  # LSBFirst: B, G, R, X
            rgb[0::3], rgb[1::3], rgb[2::3] = line[2::4], line[1::4], line[0::4]
        else:  # MSBFirst: X, R, G, B
            rgb[0::3], rgb[1::3], rgb[2::3] = line[1::4], line[2::4], line[3::4]
        rows += b"\x00" + rgb

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 6))
        + chunk(b"IEND", b"")
    )
