"""A small Tk desktop app that updates itself over the air with the Lumora client SDK.

The app's "code" is the directory ``UpdateManager.launch()`` returns: at first the embedded
bundle next to this file (``desktop_app_bundle/app.json``), later whatever was published.

    LUMORA_BOOTSTRAP_ADMIN_KEY=$KEY lumora serve &    # a local server
    export LUMORA_API_KEY=$KEY
    lumora projects create demo                       # once
    python examples/desktop_app.py --project demo     # shows the embedded text
    # edit a copy of desktop_app_bundle/app.json, then publish it:
    lumora publish my_bundle --launch-asset app.json --platform web \\
        --runtime-version 1 --project demo --message "New greeting" --yes
    # the running app offers the update, downloads it with a progress bar and restarts

``--headless`` runs one check-download-apply cycle without a window and prints JSON (handy in
scripts and tests).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from lumora_ota.client import CheckResult, DownloadProgress, UpdateManager

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--server", default=os.environ.get("LUMORA_SERVER", "http://127.0.0.1:3002")
    )
    parser.add_argument("--project", default=os.environ.get("LUMORA_PROJECT", "demo"))
    parser.add_argument("--channel", default="production")
    parser.add_argument("--platform", default="web")
    parser.add_argument("--runtime-version", default="1")
    parser.add_argument("--data-dir", type=Path, default=Path.home() / ".lumora-demo-app")
    parser.add_argument("--embedded-dir", type=Path, default=HERE / "desktop_app_bundle")
    parser.add_argument("--certificate", type=Path, help="PEM certificate: require signatures")
    parser.add_argument("--headless", action="store_true", help="one update cycle, no window")
    return parser.parse_args(argv)


def make_manager(args: argparse.Namespace, **callbacks: Any) -> UpdateManager:
    return UpdateManager(
        args.server,
        args.project,
        args.channel,
        args.runtime_version,
        args.platform,
        args.data_dir,
        embedded_dir=args.embedded_dir,
        certificate=args.certificate,
        **callbacks,
    )


def run_headless(args: argparse.Namespace) -> int:
    """Launch, confirm, check, download and apply once; print what happened as JSON."""
    with make_manager(args) as manager:
        app_dir = manager.launch()
        manager.mark_launch_successful()
        report: dict[str, Any] = {"launched": str(app_dir), "update": manager.current_update_id}
        result = manager.check_for_update()
        if result.update_available:
            installed = manager.download_and_install_update(result)
            manager.apply_update()
            report["installed"] = installed.update_id
        print(json.dumps(report))
    return 0


class DemoApp:
    """The window, and the update flow driven from the Tk thread."""

    def __init__(self, args: argparse.Namespace) -> None:
        import tkinter as tk
        from tkinter import ttk

        from lumora_ota.client.ui_tk import ProgressWindow

        self.args = args
        self.progress: ProgressWindow | None = None
        self.root = tk.Tk()
        self.manager = make_manager(
            args,
            on_download_progress=self._on_progress,
            on_error=lambda exc: self.root.after(0, self._status, f"Update error: {exc}"),
        )
        app_dir = self.manager.launch()
        content = json.loads((app_dir / "app.json").read_text()) if app_dir else {}
        self.root.title(content.get("title", "Lumora demo"))
        self.root.configure(background=content.get("background", "#ffffff"))
        frame = ttk.Frame(self.root, padding=24)
        frame.pack(fill="both", expand=True)
        ttk.Label(frame, text=content.get("title", ""), font=("TkDefaultFont", 16, "bold")).pack()
        ttk.Label(frame, text=content.get("body", ""), wraplength=420).pack(pady=12)
        running = self.manager.current_update_id or "the embedded bundle"
        ttk.Label(frame, text=f"Running {running}").pack()
        self.status = ttk.Label(frame, text="")
        self.status.pack(pady=(12, 0))
        ttk.Button(frame, text="Check for updates", command=self.check_in_background).pack()
        # The window is up: this update works (otherwise the next start rolls it back).
        self.root.after(500, self.manager.mark_launch_successful)
        self.root.after(1000, self.check_in_background)

    def run(self) -> None:
        self.root.mainloop()
        self.manager.close()

    def _status(self, text: str) -> None:
        self.status["text"] = text

    def _on_progress(self, progress: DownloadProgress) -> None:
        if self.progress is not None:
            self.progress.report(progress)  # thread-safe

    def check_in_background(self) -> None:
        self._status("Checking for updates…")

        def work() -> None:
            try:
                result = self.manager.check_for_update()
            except Exception:
                return  # already shown through on_error
            self.root.after(0, self._offer, result)

        threading.Thread(target=work, daemon=True).start()

    def _offer(self, result: CheckResult) -> None:
        from lumora_ota.client.ui_tk import ProgressWindow, ask_update_available

        if not result.update_available:
            self._status("You are up to date.")
            return
        if not ask_update_available(result, self.root):
            self._status("Update postponed.")
            return
        self.progress = ProgressWindow(self.root)

        def work() -> None:
            try:
                self.manager.download_and_install_update(result)
            except Exception:
                self.root.after(0, self._download_failed)
                return
            self.root.after(0, self._ready, result.is_mandatory)

        threading.Thread(target=work, daemon=True).start()

    def _download_failed(self) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None

    def _ready(self, mandatory: bool) -> None:
        from lumora_ota.client.ui_tk import ask_restart

        self._download_failed()  # closes the progress window
        self.manager.apply_update()  # used at the next start in any case
        if ask_restart(self.root, mandatory=mandatory):
            self.manager.close()
            os.execv(sys.executable, [sys.executable, *sys.argv])
        self._status("The update will be used at the next start.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.headless:
        return run_headless(args)
    DemoApp(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
