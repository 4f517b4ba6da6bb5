"""Update dialogs for Tk desktop apps (standard library only; tkinter is imported lazily).

- ``UpdateAvailableDialog``: release notes and "Update now" / "Later" — no "Later" (and no
  closing the window) when the update is mandatory.
- ``ProgressWindow``: a progress bar fed by ``on_download_progress`` from any thread.
- ``UpdateReadyDialog``: "Restart now" / "Later" once the update is installed.

Each dialog has a blocking ``show()`` that returns the user's choice; the widgets are built in
the constructor so apps (and tests) can also drive them without blocking.
"""

from __future__ import annotations

import queue
from typing import TYPE_CHECKING, Any

from lumora_ota.client.updater import CheckResult, DownloadProgress

if TYPE_CHECKING:
    import tkinter as tk

POLL_MS = 50


def _tk() -> Any:
    try:
        import tkinter
        from tkinter import ttk
    except ImportError as exc:  # Python built without Tk
        raise RuntimeError("lumora_ota.client.ui_tk needs tkinter (python3-tk)") from exc
    return tkinter, ttk


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"


class _Dialog:
    """A modal Toplevel with a choice; ``show()`` blocks until one is made."""

    def __init__(self, parent: tk.Misc | None, title: str) -> None:
        tkinter, _ttk = _tk()
        self._own_root = parent is None
        if parent is None:
            own_root = tkinter.Tk()
            own_root.withdraw()
            parent = own_root
        self.root: tk.Misc = parent
        self.window: tk.Toplevel = tkinter.Toplevel(self.root)
        self.window.title(title)
        self.window.resizable(False, False)
        self.choice: bool | None = None
        self.buttons: dict[str, Any] = {}

    def _choose(self, value: bool) -> None:
        self.choice = value
        self.window.destroy()

    def show(self) -> bool:
        """Block until the user decides; returns the choice (False if dismissed)."""
        self.window.grab_set()
        self.window.wait_window()
        if self._own_root:
            self.root.destroy()
        return bool(self.choice)


class UpdateAvailableDialog(_Dialog):
    """ "An update is available": release notes, size, and the buttons the policy allows."""

    def __init__(self, result: CheckResult, parent: tk.Misc | None = None) -> None:
        super().__init__(parent, "Update available")
        tkinter, ttk = _tk()
        frame = ttk.Frame(self.window, padding=16)
        frame.pack(fill="both", expand=True)
        heading = (
            "A required update is available."
            if result.is_mandatory
            else ("A new version is available.")
        )
        ttk.Label(frame, text=heading, font=("TkDefaultFont", 12, "bold")).pack(anchor="w")
        if result.download_size:
            size = f"Download size: {_human_size(result.download_size)}"
            ttk.Label(frame, text=size).pack(anchor="w", pady=(4, 8))
        ttk.Label(frame, text="What's new:").pack(anchor="w")
        self.notes = tkinter.Text(frame, width=56, height=8, wrap="word", relief="groove")
        self.notes.insert("1.0", result.message or "No release notes.")
        self.notes.configure(state="disabled")
        self.notes.pack(fill="both", expand=True, pady=(2, 12))
        row = ttk.Frame(frame)
        row.pack(anchor="e")
        if not result.is_mandatory:
            self.buttons["later"] = ttk.Button(
                row, text="Later", command=lambda: self._choose(False)
            )
            self.buttons["later"].pack(side="left", padx=4)
        self.buttons["update"] = ttk.Button(
            row, text="Update now", command=lambda: self._choose(True)
        )
        self.buttons["update"].pack(side="left", padx=4)
        # A mandatory update cannot be dismissed by closing the window either.
        self.window.protocol(
            "WM_DELETE_WINDOW",
            (lambda: None) if result.is_mandatory else (lambda: self._choose(False)),
        )


class UpdateReadyDialog(_Dialog):
    """ "The update is installed": restart now or later (it applies at the next start)."""

    def __init__(self, parent: tk.Misc | None = None, *, mandatory: bool = False) -> None:
        super().__init__(parent, "Update ready")
        _tkinter, ttk = _tk()
        frame = ttk.Frame(self.window, padding=16)
        frame.pack(fill="both", expand=True)
        text = "The update is installed. Restart now to use it?"
        if not mandatory:
            text += "\nOtherwise it is used the next time you start the app."
        ttk.Label(frame, text=text, justify="left").pack(anchor="w", pady=(0, 12))
        row = ttk.Frame(frame)
        row.pack(anchor="e")
        if not mandatory:
            self.buttons["later"] = ttk.Button(
                row, text="Later", command=lambda: self._choose(False)
            )
            self.buttons["later"].pack(side="left", padx=4)
        self.buttons["restart"] = ttk.Button(
            row, text="Restart now", command=lambda: self._choose(True)
        )
        self.buttons["restart"].pack(side="left", padx=4)
        self.window.protocol(
            "WM_DELETE_WINDOW", (lambda: None) if mandatory else (lambda: self._choose(False))
        )


class ProgressWindow:
    """A download progress window. ``report`` is thread-safe: pass it as
    ``on_download_progress`` (updates are queued and applied on the Tk thread)."""

    def __init__(self, parent: tk.Misc, title: str = "Downloading update") -> None:
        tkinter, ttk = _tk()
        self.window: tk.Toplevel = tkinter.Toplevel(parent)
        self.window.title(title)
        self.window.resizable(False, False)
        frame = ttk.Frame(self.window, padding=16)
        frame.pack(fill="both", expand=True)
        self.label = ttk.Label(frame, text="Starting download…", width=48)
        self.label.pack(anchor="w", pady=(0, 8))
        self.bar = ttk.Progressbar(frame, length=360, maximum=100.0, mode="determinate")
        self.bar.pack(fill="x")
        self._updates: queue.SimpleQueue[DownloadProgress] = queue.SimpleQueue()
        self.last: DownloadProgress | None = None
        self._closed = False
        self.window.after(POLL_MS, self._drain)

    def report(self, progress: DownloadProgress) -> None:
        """Queue a progress update (callable from the download thread)."""
        self._updates.put(progress)

    def apply(self, progress: DownloadProgress) -> None:
        """Show ``progress`` now (Tk thread only)."""
        self.last = progress
        self.bar["value"] = progress.percentage
        self.label["text"] = (
            f"{_human_size(progress.bytes_done)} of {_human_size(progress.bytes_total)}"
            f" ({progress.percentage:.0f} %)"
        )

    def close(self) -> None:
        """Close the window (Tk thread only)."""
        self._closed = True
        self.window.destroy()

    def _drain(self) -> None:
        if self._closed:
            return
        latest = None
        while not self._updates.empty():
            latest = self._updates.get()
        if latest is not None:
            self.apply(latest)
        self.window.after(POLL_MS, self._drain)


def ask_update_available(result: CheckResult, parent: tk.Misc | None = None) -> bool:
    """Show the update-available dialog; True when the user wants the update now."""
    return UpdateAvailableDialog(result, parent).show()


def ask_restart(parent: tk.Misc | None = None, *, mandatory: bool = False) -> bool:
    """Show the update-ready prompt; True when the user wants to restart now."""
    return UpdateReadyDialog(parent, mandatory=mandatory).show()
