"""The device's update state and its transitions, kept pure so they are tested directly.

The state file (``state.json``, written atomically) is the single source of truth: an update
directory that the state does not reference is garbage, whatever is on disk. An update moves
through

    installed (``ready``) -> applied (``pending``) -> launched (``current``, unconfirmed)
        -> confirmed (``good``)  or  -> ``failed`` (rolled back, never offered again)

``current is None`` means the app runs its embedded files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from lumora_ota.client.selection import Candidate, is_launchable, parse_created_at

STATE_VERSION = 1
MAX_FAILED_REMEMBERED = 50


@dataclass(frozen=True)
class InstalledInfo:
    """What the SDK remembers about an installed update."""

    launch_asset: str  # relative path of the launch asset in the update directory
    blobs: tuple[str, ...]  # sha256 of every file, for blob garbage collection
    installed_at: str
    message: str = ""
    # The runtime version the update was built for and its manifest ``createdAt``; "" in
    # state files of SDKs that did not record them (such updates are taken to match).
    runtime_version: str = ""
    created_at: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "launchAsset": self.launch_asset,
            "blobs": list(self.blobs),
            "installedAt": self.installed_at,
            "message": self.message,
            "runtimeVersion": self.runtime_version,
            "createdAt": self.created_at,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> InstalledInfo:
        """Inverse of ``to_json``."""
        return cls(
            launch_asset=str(raw["launchAsset"]),
            blobs=tuple(str(b) for b in raw.get("blobs", [])),
            installed_at=str(raw.get("installedAt", "")),
            message=str(raw.get("message", "")),
            runtime_version=str(raw.get("runtimeVersion", "")),
            created_at=str(raw.get("createdAt", "")),
        )

    def candidate(self, update_id: str, runtime_version: str) -> Candidate:
        """The update as the shared launch rules see it (``client.selection``); an update
        without a recorded runtime version counts as built for ``runtime_version``."""
        return Candidate(
            id=update_id,
            runtime_version=self.runtime_version or runtime_version,
            created_at=parse_created_at(self.created_at),
        )


@dataclass(frozen=True)
class ClientState:
    """Everything the SDK persists about updates on this device."""

    current: str | None = None
    pending: str | None = None
    ready: str | None = None
    good: tuple[str, ...] = ()  # confirmed updates, oldest first
    failed: tuple[str, ...] = ()  # oldest first, bounded
    launch_counts: dict[str, int] = field(default_factory=dict)  # unconfirmed launches
    installed: dict[str, InstalledInfo] = field(default_factory=dict)  # install order
    embedded_requested: bool = False  # a rollBackToEmbedded directive awaits the next launch
    # The newest freshness sequence seen per "project/channel/platform" (signed answers):
    # an answer older than it is a replay (``lumora_ota.freshness``).
    sequences: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """Serialized state file content."""
        document = {
            "version": STATE_VERSION,
            "current": self.current,
            "pending": self.pending,
            "ready": self.ready,
            "good": list(self.good),
            "failed": list(self.failed),
            "launchCounts": self.launch_counts,
            "installed": {k: v.to_json() for k, v in self.installed.items()},
            "embeddedRequested": self.embedded_requested,
            "sequences": self.sequences,
        }
        return json.dumps(document, indent=1, sort_keys=False).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ClientState:
        """Parse a state file; raises ``ValueError``/``KeyError``/``TypeError`` when corrupt."""
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
            raise ValueError("unknown state file version")
        return cls(
            current=raw.get("current"),
            pending=raw.get("pending"),
            ready=raw.get("ready"),
            good=tuple(raw.get("good", [])),
            failed=tuple(raw.get("failed", [])),
            launch_counts={str(k): int(v) for k, v in raw.get("launchCounts", {}).items()},
            installed={
                str(k): InstalledInfo.from_json(v) for k, v in raw.get("installed", {}).items()
            },
            embedded_requested=bool(raw.get("embeddedRequested", False)),
            sequences={str(k): int(v) for k, v in raw.get("sequences", {}).items()},
        )


@dataclass(frozen=True)
class Rollback:
    """One automatic or explicit rollback: from an update to another (None = embedded)."""

    from_update: str | None
    to_update: str | None
    reason: str  # "launch_failure", "missing", "requested", "directive"


@dataclass(frozen=True)
class LaunchDecision:
    """The outcome of ``begin_launch``."""

    state: ClientState
    update_id: str | None  # what to launch now (None = embedded)
    rollbacks: tuple[Rollback, ...]


def record_installed(state: ClientState, update_id: str, info: InstalledInfo) -> ClientState:
    """An update finished installing: it is ready to be applied."""
    installed = {k: v for k, v in state.installed.items() if k != update_id}
    installed[update_id] = info
    return replace(state, installed=installed, ready=update_id)


def record_sequence(state: ClientState, stream: str, sequence: int) -> ClientState:
    """A fresh signed answer of ``stream`` with ``sequence`` was accepted: remember the
    newest sequence seen (it never goes down)."""
    if state.sequences.get(stream, -1) >= sequence:
        return state
    return replace(state, sequences={**state.sequences, stream: sequence})


def mark_ready(state: ClientState, update_id: str) -> ClientState:
    """An already installed update is offered again: make it the ready one."""
    return replace(state, ready=update_id)


def apply_ready(state: ClientState) -> ClientState:
    """Make the ready update the one the next launch runs."""
    if state.ready is None:
        return state
    return replace(state, pending=state.ready, ready=None, embedded_requested=False)


def request_embedded(state: ClientState) -> ClientState:
    """A rollBackToEmbedded directive: the next launch runs the embedded files."""
    return replace(state, embedded_requested=True, pending=None, ready=None)


def previous_good(
    state: ClientState, excluding: str | None, available: Callable[[str], bool]
) -> str | None:
    """The newest confirmed update other than ``excluding`` that is still launchable."""
    for update_id in reversed(state.good):
        if update_id != excluding and update_id not in state.failed and available(update_id):
            return update_id
    return None


def mark_failed(
    state: ClientState, update_id: str, available: Callable[[str], bool], reason: str
) -> tuple[ClientState, Rollback]:
    """Give up on ``update_id``: never launch or offer it again; fall back to the previous good."""
    failed = (*(f for f in state.failed if f != update_id), update_id)
    counts = {k: v for k, v in state.launch_counts.items() if k != update_id}
    fallback = previous_good(state, update_id, available)
    new_state = replace(
        state,
        failed=failed[-MAX_FAILED_REMEMBERED:],
        launch_counts=counts,
        good=tuple(g for g in state.good if g != update_id),
        current=fallback if state.current == update_id else state.current,
        pending=None if state.pending == update_id else state.pending,
        ready=None if state.ready == update_id else state.ready,
    )
    return new_state, Rollback(update_id, fallback, reason)


def forget_other_runtimes(
    state: ClientState, runtime_version: str, available: Callable[[str], bool]
) -> tuple[ClientState, tuple[str, ...]]:
    """After a binary upgrade (or downgrade): forget every update built for another runtime
    version, so it never launches again (``client.selection.is_launchable``). They did not
    fail, so they are not remembered as failed; their files become garbage. A stale running
    update gives way to the newest good update of this runtime, or the embedded files.
    Returns the new state and the ids forgotten."""
    stale = tuple(
        update_id
        for update_id, info in state.installed.items()
        if not is_launchable(info.candidate(update_id, runtime_version), runtime_version)
    )
    if not stale:
        return state, ()
    for update_id in stale:
        state = _forget(state, update_id)
    state = replace(
        state,
        current=None if state.current in stale else state.current,
        pending=None if state.pending in stale else state.pending,
        ready=None if state.ready in stale else state.ready,
    )
    if state.current is None and state.pending is None and not state.embedded_requested:
        state = replace(state, current=previous_good(state, None, available))
    return state, stale


def _forget(state: ClientState, update_id: str) -> ClientState:
    """Drop an update whose directory vanished (it did not fail; it is just gone)."""
    return replace(
        state,
        good=tuple(g for g in state.good if g != update_id),
        installed={k: v for k, v in state.installed.items() if k != update_id},
        launch_counts={k: v for k, v in state.launch_counts.items() if k != update_id},
    )


def begin_launch(
    state: ClientState, max_failed_launches: int, available: Callable[[str], bool]
) -> LaunchDecision:
    """Decide what this launch runs, applying pending updates and automatic rollbacks.

    An unconfirmed update that was already launched ``max_failed_launches`` times without
    ``confirm_launch`` is marked failed and the previous good update (or the embedded files)
    runs instead. Otherwise its launch count goes up by one.
    """
    rollbacks: list[Rollback] = []
    if state.embedded_requested:
        if state.current is not None:
            rollbacks.append(Rollback(state.current, None, "directive"))
        state = replace(state, embedded_requested=False, current=None, pending=None)
    if state.pending is not None:
        applied = state.pending
        counts = {k: v for k, v in state.launch_counts.items() if k != applied}
        state = replace(state, current=applied, pending=None, launch_counts=counts)
    while state.current is not None:
        current = state.current
        if not available(current):
            fallback = previous_good(state, current, available)
            rollbacks.append(Rollback(current, fallback, "missing"))
            state = replace(_forget(state, current), current=fallback)
            continue
        if current in state.failed:
            state, rollback = mark_failed(state, current, available, "launch_failure")
            rollbacks.append(rollback)
            continue
        if current in state.good:
            break
        launches = state.launch_counts.get(current, 0)
        if launches >= max_failed_launches:
            state, rollback = mark_failed(state, current, available, "launch_failure")
            rollbacks.append(rollback)
            continue
        state = replace(state, launch_counts={**state.launch_counts, current: launches + 1})
        break
    return LaunchDecision(state, state.current, tuple(rollbacks))


def confirm_launch(state: ClientState) -> tuple[ClientState, bool]:
    """The running update works: it becomes the last known good. Returns (state, changed)."""
    current = state.current
    if current is None or current in state.good:
        return state, False
    counts = {k: v for k, v in state.launch_counts.items() if k != current}
    good = (*(g for g in state.good if g != current), current)
    return replace(state, good=good, launch_counts=counts), True


def rollback_current(
    state: ClientState, available: Callable[[str], bool]
) -> tuple[ClientState, Rollback | None]:
    """Explicit rollback: the running update is marked failed; the previous good one runs next."""
    if state.current is None:
        return state, None
    return mark_failed(state, state.current, available, "requested")


def updates_to_keep(state: ClientState, keep_updates: int) -> set[str]:
    """Installed updates that garbage collection must keep.

    Always: the running, pending and ready updates and the last known good one; plus the
    newest ``keep_updates`` installed ones that did not fail.
    """
    keep = {u for u in (state.current, state.pending, state.ready) if u is not None}
    if state.good:
        keep.add(state.good[-1])
    healthy = [u for u in state.installed if u not in state.failed]
    keep.update(healthy[-keep_updates:] if keep_updates > 0 else [])
    return keep & set(state.installed)


def prune(state: ClientState, keep: set[str]) -> ClientState:
    """Forget installed updates that are not kept (their directories are about to go)."""
    return replace(
        state,
        installed={k: v for k, v in state.installed.items() if k in keep},
        good=tuple(g for g in state.good if g in keep),
    )
