"""``UpdateManager``: check, download, install, apply, launch, confirm and roll back updates.

See the package docstring (``lumora_ota.client``) for the workflow. Files under ``data_dir``::

    state.json            the state machine (current/pending/ready/good/failed), atomic
    device-id             a random id, made once
    blobs/<sha256>        verified blobs shared by all updates
    downloads/<sha>.part  partial downloads, resumed with Range
    staging/              update directories being assembled
    updates/<update-id>/  installed updates: the files under their manifest paths
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from lumora_ota.client._internal import state as sm
from lumora_ota.client._internal.check import CheckAnswer, check_freshness, read_check_answer
from lumora_ota.client._internal.delta import PatchBase
from lumora_ota.client._internal.download import BlobCache, RetryPolicy
from lumora_ota.client._internal.events import EventReporter, utc_now_iso
from lumora_ota.client._internal.fs import FileSystem
from lumora_ota.client._internal.install import build_update_dir
from lumora_ota.client._internal.manifest import Manifest, ManifestAsset, parse_manifest
from lumora_ota.client._internal.signature import load_trusted_certificate
from lumora_ota.client.errors import LumoraClientError, ServerResponseError, StaleAnswerError
from lumora_ota.client.fetcher import FetcherInterface, HttpxFetcher
from lumora_ota.client.selection import (
    Candidate,
    is_launchable,
    parse_created_at,
    should_load_new_update,
)
from lumora_ota.event_types import EventType

log = logging.getLogger("lumora_ota.client")

MAX_CHECK_ANSWER = 16 * 1024 * 1024
ROLL_BACK_TO_EMBEDDED = "rollBackToEmbedded"


@dataclass(frozen=True)
class DownloadProgress:
    """Progress of ``download_and_install_update``: bytes held of the bytes needed."""

    bytes_done: int
    bytes_total: int

    @property
    def percentage(self) -> float:
        """0.0 to 100.0 (100.0 when nothing had to be downloaded)."""
        if self.bytes_total <= 0:
            return 100.0
        return min(100.0, 100.0 * self.bytes_done / self.bytes_total)


@dataclass(frozen=True)
class CheckResult:
    """The answer of ``check_for_update``."""

    update_available: bool
    is_mandatory: bool = False
    manifest: Manifest | None = None
    message: str = ""  # release notes
    directive: str | None = None  # "rollBackToEmbedded", "noUpdateAvailable" or None
    download_size: int = 0  # bytes not yet in the cache
    signature_verified: bool = False

    @property
    def update_id(self) -> str | None:
        """The offered update's id."""
        return self.manifest.id if self.manifest else None


@dataclass(frozen=True)
class InstalledUpdate:
    """An installed update: where its files are and which one to launch."""

    update_id: str
    directory: Path
    launch_asset: Path
    message: str


ErrorCallback = Callable[[Exception], None]


def _ignore(*_args: Any) -> None:
    return None


class UpdateManager:
    """Keeps one app's files up to date from a Lumora server. One instance per ``data_dir``.

    Thread-safe: an ``AutoUpdateChecker`` may check and download in the background while the
    app launches and confirms. Callbacks run on the thread that triggered them.
    """

    def __init__(
        self,
        server_url: str,
        project_id: str,
        channel: str,
        runtime_version: str,
        platform: str,
        data_dir: str | Path,
        *,
        embedded_dir: str | Path | None = None,
        certificate: bytes | str | Path | None = None,
        freshness_certificate: bytes | str | Path | None = None,
        device_id: str | None = None,
        on_update_available: Callable[[CheckResult], None] | None = None,
        on_download_progress: Callable[[DownloadProgress], None] | None = None,
        on_update_ready: Callable[[InstalledUpdate], None] | None = None,
        on_error: ErrorCallback | None = None,
        fetcher: FetcherInterface | None = None,
        keep_updates: int = 2,
        max_failed_launches: int = 1,
        retry: RetryPolicy | None = None,
        embedded_update_id: str | None = None,
        embedded_launch_asset: str | None = None,
        report_events: bool = True,
        _filesystem: FileSystem | None = None,
        _sleep: Callable[[float], None] = time.sleep,
        _clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if max_failed_launches < 1:
            raise ValueError("max_failed_launches must be at least 1")
        self.server_url = server_url.rstrip("/")
        self.project_id = project_id
        self.channel = channel
        self.runtime_version = runtime_version
        self.platform = platform
        self.data_dir = Path(data_dir).expanduser()
        self.embedded_dir = Path(embedded_dir).expanduser() if embedded_dir is not None else None
        self.embedded_update_id = embedded_update_id
        # The launch asset inside ``embedded_dir``: with ``embedded_update_id`` it is the base
        # of a delta download while the device still runs its embedded files.
        self.embedded_launch_asset = embedded_launch_asset
        self.keep_updates = keep_updates
        self.max_failed_launches = max_failed_launches
        self._certificate: x509.Certificate | None = (
            load_trusted_certificate(certificate) if certificate is not None else None
        )
        # Where the freshness statements of signed answers are verified: the server's online
        # timestamp key when the publisher holds the signing key, else ``certificate``.
        self._freshness_certificate: x509.Certificate | None = (
            load_trusted_certificate(freshness_certificate)
            if freshness_certificate is not None
            else None
        )
        self._clock = _clock
        self._on_update_available = on_update_available or _ignore
        self._on_download_progress = on_download_progress or _ignore
        self._on_update_ready = on_update_ready or _ignore
        self._on_error = on_error or _ignore
        self._owns_fetcher = fetcher is None
        self.fetcher = fetcher or HttpxFetcher()
        self._retry = retry or RetryPolicy()
        self._fs = _filesystem or FileSystem()
        self._lock = threading.RLock()  # guards the state and the file tree
        self._install_lock = threading.Lock()  # one download/install at a time
        self._in_flight_blobs: set[str] = set()
        self._updates_dir = self.data_dir / "updates"
        self._staging_dir = self.data_dir / "staging"
        self._state_path = self.data_dir / "state.json"
        self._blobs = BlobCache(self.data_dir, self._fs, sleep=_sleep)
        self._fs.mkdir(self.data_dir)
        self.device_id = device_id or self._load_device_id()
        self._state = self._load_state()
        self._events: EventReporter | None = (
            EventReporter(
                self.fetcher,
                f"{self.server_url}/api/v1/events",
                device_id=self.device_id,
                project_id=project_id,
                on_error=self._report_error,
            )
            if report_events
            else None
        )
        self._launched: str | None = None  # the update this process runs (kept by GC)

    # ------------------------------------------------------------------ public API

    @property
    def current_update_id(self) -> str | None:
        """The update that runs (or ran last); None for the embedded files."""
        with self._lock:
            return self._state.current

    @property
    def failed_update_ids(self) -> tuple[str, ...]:
        """Updates that failed to launch on this device (never offered again)."""
        with self._lock:
            return self._state.failed

    @property
    def ready_update(self) -> InstalledUpdate | None:
        """The installed update waiting for ``apply_update``, if any."""
        with self._lock:
            return self._installed(self._state.ready)

    @property
    def launched_update(self) -> InstalledUpdate | None:
        """The update ``launch`` returned (None for the embedded files or before launch)."""
        with self._lock:
            return self._installed(self._launched)

    def check_for_update(self) -> CheckResult:
        """Ask the server whether a newer update exists for this device.

        Raises a ``LumoraClientError`` (after calling ``on_error``) when the server cannot be
        reached, answers badly, or — with a certificate — sends an unsigned or wrongly signed
        manifest. Failed updates are never offered. A ``rollBackToEmbedded`` directive makes
        the next ``launch`` use the embedded files.
        """
        try:
            result = self._check()
        except LumoraClientError as exc:
            self._report_error(exc)
            raise
        if result.update_available:
            self._callback(self._on_update_available, result)
        return result

    def download_and_install_update(self, result: CheckResult) -> InstalledUpdate:
        """Download what the cache lacks, verify it and install the update atomically.

        The update becomes ``ready``; ``apply_update`` makes the next launch run it.
        """
        manifest = result.manifest
        if manifest is None:
            raise ValueError("the check result offers no update")
        try:
            with self._install_lock:
                installed = self._download_and_install(manifest, result.message)
        except LumoraClientError as exc:
            self._report_error(exc)
            self._event("download_failed", manifest.id, detail=str(exc)[:2000])
            raise
        self._callback(self._on_update_ready, installed)
        return installed

    def apply_update(self) -> str | None:
        """Make the ready update the one the next ``launch`` runs; returns its id."""
        with self._lock:
            ready = self._state.ready
            self._save(sm.apply_ready(self._state))
            return ready

    def launch(self) -> Path | None:
        """The directory the app should load now (``embedded_dir`` when running no update).

        Updates built for another runtime version (the app was upgraded to a new binary) never
        launch: they are forgotten, their files deleted, and the new ``embedded_dir`` (or the
        newest good update of this runtime) runs. Applies a pending update, counts launches of
        unconfirmed updates and, when an update
        was launched ``max_failed_launches`` times without ``mark_launch_successful``,
        marks it failed and falls back to the previous good update or the embedded files.
        Never raises: on a file-system error it reports through ``on_error`` and returns the
        embedded files.
        """
        try:
            with self._lock:
                state, stale = sm.forget_other_runtimes(
                    self._state, self.runtime_version, self._is_launchable
                )
                decision = sm.begin_launch(state, self.max_failed_launches, self._is_launchable)
                self._save(decision.state)
                self._launched = decision.update_id
            for rollback in decision.rollbacks:
                self._report_rollback(rollback)
            if stale:
                self._collect_garbage_safely()  # updates of the old binary's runtime
            if decision.update_id is None:
                return self.embedded_dir
            return self._updates_dir / decision.update_id
        except Exception as exc:
            self._report_error(exc)
            self._launched = None
            return self.embedded_dir

    def mark_launch_successful(self) -> None:
        """Confirm the running update works (call once the app is up, like notifyAppReady).

        It becomes the last known good update; older updates are garbage-collected.
        """
        with self._lock:
            new_state, changed = sm.confirm_launch(self._state)
            if changed:
                self._save(new_state)
            current = new_state.current
        if changed:
            self._event("launch_success", current)
        self._collect_garbage_safely()

    def rollback(self) -> Path | None:
        """Give up on the running update: it is marked failed and never offered again.

        Returns the directory the next ``launch`` will load (the previous good update or the
        embedded files); the app restarts to switch.
        """
        with self._lock:
            new_state, rollback = sm.rollback_current(self._state, self._is_launchable)
            self._save(new_state)
        if rollback is not None:
            self._report_rollback(rollback)
        target = new_state.current
        return self._updates_dir / target if target else self.embedded_dir

    def flush_events(self, timeout: float = 5.0) -> bool:
        """Wait (bounded) until queued events were sent; returns whether all went out."""
        return self._events.flush(timeout) if self._events else True

    def close(self, timeout: float = 2.0) -> None:
        """Send queued events (bounded by ``timeout``) and release the network client."""
        if self._events is not None:
            self._events.close(timeout)
        if self._owns_fetcher:
            self.fetcher.close()

    def __enter__(self) -> UpdateManager:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ check

    def _check(self) -> CheckResult:
        with self._lock:
            state = self._state
        request: dict[str, Any] = {
            "projectId": self.project_id,
            "channel": self.channel,
            "platform": self.platform,
            "runtimeVersion": self.runtime_version,
            "deviceId": self.device_id,
        }
        if state.current is not None:
            request["currentUpdateId"] = state.current
        if self.embedded_update_id is not None:
            request["embeddedUpdateId"] = self.embedded_update_id
        if state.failed:
            request["recentFailedUpdateIds"] = list(state.failed)
        headers = {}
        if self._certificate is not None:
            request["signed"] = True
            headers["expo-expect-signature"] = 'sig, alg="rsa-v1_5-sha256"'
        response = self.fetcher.post_json(
            f"{self.server_url}/api/v1/updates/check",
            request,
            headers=headers,
            max_length=MAX_CHECK_ANSWER,
        )
        answer = read_check_answer(
            response.body, response.headers, self._certificate, self._freshness_certificate
        )
        if answer.freshness is not None:
            self._accept_fresh(answer)
        directive = answer.directive.get("type") if answer.directive else None
        if directive == ROLL_BACK_TO_EMBEDDED:
            with self._lock:
                state_now = self._state
                if any(
                    u is not None for u in (state_now.current, state_now.pending, state_now.ready)
                ):
                    self._save(sm.request_embedded(state_now))
            return CheckResult(
                False, directive=directive, signature_verified=answer.signature_verified
            )
        if not answer.update_available or answer.manifest is None:
            return CheckResult(
                False,
                directive=directive if isinstance(directive, str) else None,
                signature_verified=answer.signature_verified,
            )
        manifest = parse_manifest(answer.manifest, self.server_url + "/")
        if manifest.id in state.failed or manifest.id in (state.current, state.pending):
            # failed here before, running, or applied and waiting for the next launch
            return CheckResult(False, signature_verified=answer.signature_verified)
        # Under a separate timestamp key (the publisher holds the signing key) the server's
        # word is not enough to take devices back: only the publisher's newer copies are.
        rollback = answer.freshness is not None and answer.freshness.rollback
        if answer.freshness is not None and (not rollback or self._freshness_certificate):
            self._refuse_downgrade(state, manifest)
        missing = {a.sha256: a.size for a in manifest.files if not self._blobs.has(a)}
        return CheckResult(
            update_available=True,
            is_mandatory=answer.is_mandatory,
            manifest=manifest,
            message=answer.message,
            download_size=sum(missing.values()),
            signature_verified=answer.signature_verified,
        )

    def _accept_fresh(self, answer: CheckAnswer) -> None:
        """Refuse a signed answer that is not fresh (``check_freshness``); else remember its
        sequence (atomically, in the state file) so no older answer is believed again."""
        freshness = answer.freshness
        assert freshness is not None
        stream = f"{self.project_id}/{self.channel}/{self.platform}"
        with self._lock:
            check_freshness(
                freshness,
                project_id=self.project_id,
                channel=self.channel,
                platform=self.platform,
                now=self._clock(),
                newest_seen=self._state.sequences.get(stream),
                offers_update=answer.update_available,
            )
            self._save(sm.record_sequence(self._state, stream, freshness.sequence))

    def _refuse_downgrade(self, state: sm.ClientState, manifest: Manifest) -> None:
        """``StaleAnswerError`` when ``manifest`` is older than the update this device runs
        (or has applied): only an answer signed as a rollback may take it back."""
        offered = Candidate(
            manifest.id, manifest.runtime_version, parse_created_at(manifest.created_at)
        )
        for update_id in (state.pending, state.current):
            info = state.installed.get(update_id) if update_id is not None else None
            if info is None or update_id is None:
                continue
            running = info.candidate(update_id, self.runtime_version)
            if not should_load_new_update(offered, running):
                raise StaleAnswerError(
                    f"update {manifest.id} is older than update {update_id} on this device "
                    "and the answer is not a signed rollback"
                )

    # ------------------------------------------------------------------ download + install

    def _download_and_install(self, manifest: Manifest, message: str) -> InstalledUpdate:
        with self._lock:
            if manifest.id in self._state.failed:
                raise LumoraClientError(f"update {manifest.id} failed on this device before")
            already = self._installed(manifest.id)
            if already is not None and self._is_launchable(manifest.id):
                if self._state.current != manifest.id and self._state.pending != manifest.id:
                    self._save(sm.mark_ready(self._state, manifest.id))
                return already
            self._in_flight_blobs.update(a.sha256 for a in manifest.files)
        try:
            self._download_missing(manifest)
            with self._lock:
                directory = build_update_dir(
                    manifest, self._blobs, self._updates_dir, self._staging_dir, self._fs
                )
                info = sm.InstalledInfo(
                    launch_asset=manifest.launch_asset.path,
                    blobs=tuple(sorted({a.sha256 for a in manifest.files})),
                    installed_at=utc_now_iso(),
                    message=message,
                    runtime_version=manifest.runtime_version,
                    created_at=manifest.created_at,
                )
                self._save(sm.record_installed(self._state, manifest.id, info))
        finally:
            with self._lock:
                self._in_flight_blobs.difference_update(a.sha256 for a in manifest.files)
        self._event("install", manifest.id)
        self._collect_garbage_safely()
        return InstalledUpdate(
            manifest.id, directory, directory / manifest.launch_asset.path, message
        )

    def _download_missing(self, manifest: Manifest) -> None:
        unique: dict[str, ManifestAsset] = {}
        for asset in manifest.files:
            unique.setdefault(asset.sha256, asset)
        needed = [a for a in unique.values() if not self._blobs.verify_cached(a)]
        total = sum(a.size for a in needed)
        completed = 0
        self._progress(0, total)
        for asset in needed:
            base = completed

            def on_bytes(held: int, base: int = base) -> None:
                self._progress(base + held, total)

            patch_base = (
                self._patch_base(manifest) if asset.sha256 == manifest.launch_asset.sha256 else None
            )
            self._blobs.download(self.fetcher, asset, self._retry, on_bytes, patch_base)
            completed += asset.size
            self._progress(completed, total)
        if needed:
            self._event("download_completed", manifest.id)

    def _patch_base(self, manifest: Manifest) -> PatchBase | None:
        """The running update's launch asset, when held: the base of a delta download (the
        embedded one while no update runs, when ``embedded_launch_asset`` names it)."""
        with self._lock:
            current = self._state.current
            info = self._state.installed.get(current) if current is not None else None
        if info is not None and current is not None:
            path = self._updates_dir / current / info.launch_asset
        elif (
            current is None
            and self.embedded_update_id
            and self.embedded_dir is not None
            and self.embedded_launch_asset
        ):
            current = self.embedded_update_id
            path = self.embedded_dir / self.embedded_launch_asset
        else:
            return None
        if not path.is_file():
            return None
        return PatchBase(
            base_update_id=current,
            base_path=path,
            requested_update_id=manifest.id,
            embedded_update_id=self.embedded_update_id,
        )

    def _progress(self, done: int, total: int) -> None:
        self._callback(self._on_download_progress, DownloadProgress(done, total))

    # ------------------------------------------------------------------ state + GC

    def _is_launchable(self, update_id: str) -> bool:
        info = self._state.installed.get(update_id)
        if info is None:
            return False
        if not is_launchable(info.candidate(update_id, self.runtime_version), self.runtime_version):
            return False
        return (self._updates_dir / update_id / info.launch_asset).is_file()

    def _installed(self, update_id: str | None) -> InstalledUpdate | None:
        if update_id is None:
            return None
        info = self._state.installed.get(update_id)
        if info is None:
            return None
        directory = self._updates_dir / update_id
        return InstalledUpdate(update_id, directory, directory / info.launch_asset, info.message)

    def _load_state(self) -> sm.ClientState:
        try:
            return sm.ClientState.from_json(self._state_path.read_bytes())
        except FileNotFoundError:
            return sm.ClientState()
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Only reachable if someone edits the file: it is always replaced atomically.
            self._report_error(ServerResponseError(f"state file unreadable, starting over: {exc}"))
            return sm.ClientState()

    def _save(self, new_state: sm.ClientState) -> None:
        if new_state == self._state:
            return
        self._fs.atomic_write(self._state_path, new_state.to_json())
        self._state = new_state

    def _load_device_id(self) -> str:
        path = self.data_dir / "device-id"
        with contextlib.suppress(FileNotFoundError):
            existing = path.read_text().strip()
            if existing:
                return existing
        device_id = uuid.uuid4().hex
        self._fs.atomic_write(path, device_id.encode())
        return device_id

    def _collect_garbage_safely(self) -> None:
        try:
            self._collect_garbage()
        except Exception as exc:
            self._report_error(exc)

    def _collect_garbage(self) -> None:
        """Delete update directories, blobs and partial files no kept update needs."""
        with self._lock:
            keep = sm.updates_to_keep(self._state, self.keep_updates)
            if self._launched is not None:
                keep.add(self._launched)  # the files of the running process stay
            keep &= set(self._state.installed)
            self._save(sm.prune(self._state, keep))
            needed_blobs = {b for u in keep for b in self._state.installed[u].blobs}
            needed_blobs |= self._in_flight_blobs
            if self._updates_dir.is_dir():
                for entry in self._updates_dir.iterdir():
                    if entry.name not in keep:
                        self._fs.rmtree(entry)
            if self._blobs.blobs_dir.is_dir():
                for blob in self._blobs.blobs_dir.iterdir():
                    if blob.name not in needed_blobs:
                        self._fs.unlink(blob)
            if not self._in_flight_blobs:
                self._fs.rmtree(self._staging_dir)
            self._blobs.remove_stale_parts(keep=needed_blobs)

    # ------------------------------------------------------------------ reporting

    def _report_rollback(self, rollback: sm.Rollback) -> None:
        if rollback.reason in ("launch_failure", "requested"):
            self._event("launch_failure", rollback.from_update, detail=rollback.reason)
        self._event(
            "rollback", rollback.from_update, toUpdateId=rollback.to_update, detail=rollback.reason
        )

    def _event(self, event_type: EventType, update_id: str | None, **fields: Any) -> None:
        if self._events is not None:
            self._events.report(
                event_type,
                update_id,
                channel=self.channel,
                platform=self.platform,
                runtimeVersion=self.runtime_version,
                **fields,
            )

    def _report_error(self, exc: Exception) -> None:
        log.warning("lumora update error: %s", exc)
        self._callback(self._on_error, exc)

    def _callback(self, callback: Callable[[Any], None], value: Any) -> None:
        """Run an app callback; its exceptions are logged, never propagated into the SDK."""
        try:
            callback(value)
        except Exception:
            log.exception("an update callback raised")
