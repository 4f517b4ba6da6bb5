"""Which stored update a device may launch, and which offered update it should take.

Pure rules shared by the SDK (``UpdateManager.launch``) and the tests' model of the
expo-updates client, so both follow what expo-updates does (expo/expo,
``packages/expo-updates/android/src/main/java/expo/modules/updates/selectionpolicy/``):

* ``LauncherSelectionPolicyFilterAware``: only an update built for the binary's runtime
  version may launch (after a binary upgrade, updates of the old runtime never run again and
  the new embedded files do); of those, the newest ``createdAt`` wins. An update that failed
  to launch is not launchable (the launchable-updates query of its database).
* ``LoaderSelectionPolicyFilterAware.shouldLoadNewUpdate``: an offered update is taken only
  when it is newer than the running one (strictly later ``createdAt``).
* ``shouldLoadRollBackToEmbeddedDirective``: a ``rollBackToEmbedded`` directive applies only
  when its ``commitTime`` is later than the running update's ``createdAt``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class Candidate:
    """A stored update as the rules see it.

    ``created_at`` is the manifest's ``createdAt`` (for the embedded update: its build time, or
    the ``commitTime`` of an applied roll-back-to-embedded directive); None when unknown.
    """

    id: str
    runtime_version: str
    created_at: datetime | None = None
    failed: bool = False
    embedded: bool = False


def parse_created_at(value: str | None) -> datetime | None:
    """An ISO 8601 ``createdAt``/``commitTime`` (``Z`` allowed) as an aware datetime, or None
    when absent or unparsable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def is_launchable(candidate: Candidate, runtime_version: str) -> bool:
    """Whether the binary running ``runtime_version`` may launch ``candidate``."""
    return candidate.runtime_version == runtime_version and not candidate.failed


def select_update_to_launch(
    candidates: Iterable[Candidate], runtime_version: str
) -> Candidate | None:
    """The launchable candidate with the latest ``created_at`` (unknown times sort first)."""
    launchable = [c for c in candidates if is_launchable(c, runtime_version)]
    return max(launchable, key=_order, default=None)


def should_load_new_update(new: Candidate, launched: Candidate | None) -> bool:
    """Whether an offered update replaces the running one: only when strictly newer (an
    unknown time on either side cannot be ordered, so the offer is taken)."""
    if launched is None or new.created_at is None or launched.created_at is None:
        return True
    return new.created_at > launched.created_at


def should_load_rollback_to_embedded(commit_time: datetime, launched: Candidate | None) -> bool:
    """Whether a ``rollBackToEmbedded`` directive with ``commit_time`` applies."""
    if launched is None or launched.created_at is None:
        return True
    return commit_time > launched.created_at


def _order(candidate: Candidate) -> datetime:
    return candidate.created_at or datetime.min.replace(tzinfo=UTC)
