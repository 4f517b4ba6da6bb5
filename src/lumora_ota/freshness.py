"""Freshness of signed check answers: what stops replay, freeze and rollback attacks on the SDK.

A signature over a manifest says who published it, not that it is still what the server
serves: an old signed answer (a rolled-back update, a "no update" from before a fix) verifies
forever. TUF's timestamp role closes that gap, and this is its counterpart for Lumora's check
API (the Expo protocol has no such field; SECURITY.md). A signed check answer carries, beside
``manifestText``/``directiveText`` and its ``signature``, a *freshness statement*:

* ``freshnessText`` — compact JSON, the exact bytes signed::

    {"type": "lumora-freshness", "version": 1, "projectId": "...", "channel": "...",
     "platform": "ios", "sequence": 42, "issuedAt": "...Z", "expires": "...Z",
     "bodySha256": "<hex SHA-256 of the manifestText/directiveText UTF-8 bytes>",
     "rollback": false}

* ``freshnessSignature`` — an ``expo-signature`` value over those bytes.

``projectId`` is the project as the device named it (id or slug). ``sequence`` is the
database's delivery revision the answer was computed from: it grows with every change a
device could be served, across restarts and server processes, hence monotonically for each
(project, channel, platform). ``channel`` is "" for a channel the project does not have (its
answer is always "no update"). ``rollback`` is true when the
answer deliberately takes devices back: a ``rollBackToEmbedded`` directive, or an update
older than one rolled back in its stream. The statement is valid from ``issuedAt`` until
``expires``; servers issue one per ``ttl / 4`` window so every statement has at least three
quarters of its lifetime left when served.

The SDK (``client/_internal/check.py``) refuses an answer whose statement is missing,
mis-signed, for another stream, for other bytes, expired, or of a lower sequence than the
newest it has seen; and an update older than the one it runs unless ``rollback`` is true.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

FRESHNESS_TYPE = "lumora-freshness"
FRESHNESS_VERSION = 1


class FreshnessError(ValueError):
    """A freshness statement that is malformed."""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise FreshnessError(f"{name} is not a string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise FreshnessError(f"{name} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise FreshnessError(f"{name} has no time zone")
    return moment


def body_digest(body: bytes) -> str:
    """Hex SHA-256 of a signed manifest or directive body (what ``bodySha256`` states)."""
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True, slots=True)
class Freshness:
    """One freshness statement (see the module docs for the fields)."""

    project_id: str
    channel: str
    platform: str
    sequence: int
    issued_at: datetime
    expires: datetime
    body_sha256: str
    rollback: bool = False

    def to_bytes(self) -> bytes:
        """The compact UTF-8 JSON that is signed."""
        document = {
            "type": FRESHNESS_TYPE,
            "version": FRESHNESS_VERSION,
            "projectId": self.project_id,
            "channel": self.channel,
            "platform": self.platform,
            "sequence": self.sequence,
            "issuedAt": _iso(self.issued_at),
            "expires": _iso(self.expires),
            "bodySha256": self.body_sha256,
            "rollback": self.rollback,
        }
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def parse(cls, text: str) -> Freshness:
        """The statement in ``text``; ``FreshnessError`` when it is not one."""
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise FreshnessError("freshnessText is not JSON") from exc
        if not isinstance(raw, dict):
            raise FreshnessError("freshnessText is not a JSON object")
        if raw.get("type") != FRESHNESS_TYPE or raw.get("version") != FRESHNESS_VERSION:
            raise FreshnessError("freshnessText is not a version 1 lumora-freshness statement")
        sequence = raw.get("sequence")
        if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
            raise FreshnessError("sequence is not a non-negative integer")
        strings = {}
        for name in ("projectId", "channel", "platform", "bodySha256"):
            value = raw.get(name)
            if not isinstance(value, str):
                raise FreshnessError(f"{name} is not a string")
            strings[name] = value
        rollback = raw.get("rollback", False)
        if not isinstance(rollback, bool):
            raise FreshnessError("rollback is not a boolean")
        return cls(
            project_id=strings["projectId"],
            channel=strings["channel"],
            platform=strings["platform"],
            sequence=sequence,
            issued_at=_parse_time(raw.get("issuedAt"), "issuedAt"),
            expires=_parse_time(raw.get("expires"), "expires"),
            body_sha256=strings["bodySha256"],
            rollback=rollback,
        )


def issue_window(now: float, ttl: int) -> tuple[datetime, datetime]:
    """``(issuedAt, expires)`` of the statements served at ``now`` (Unix seconds): windows of
    ``ttl / 4`` seconds (at least one), each valid for ``ttl`` seconds from its start. One
    statement per answer and window is signed, whatever the number of requests."""
    step = max(1, ttl // 4)
    start = math.floor(now / step) * step
    return datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(start + ttl, UTC)
