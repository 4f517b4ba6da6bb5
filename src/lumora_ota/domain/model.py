"""Plain, immutable records the domain logic works on (no ORM objects cross this line)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Platform = Literal["ios", "android", "web"]
PLATFORMS: tuple[str, ...] = ("ios", "android", "web")
UpdateKind = Literal["update", "rollback_to_embedded"]
UpdateStatus = Literal["active", "rolled_back"]


@dataclass(frozen=True, slots=True)
class AssetRecord:
    """One file of an update."""

    key: str  # the publisher's relative path, e.g. "assets/4f1c..." or "bundles/ios-...js"
    sha256: str  # lowercase hex
    size: int
    content_type: str
    file_extension: str  # with a leading dot, or "" when the file has none
    md5: str | None = None  # lowercase hex md5 of the bytes: the manifest key


@dataclass(frozen=True, slots=True)
class UpdateRecord:
    """One platform's update (or roll-back-to-embedded marker) as the engine sees it."""

    id: str
    group_id: str
    project_id: str
    channel: str
    platform: str
    runtime_version: str
    created_at: datetime
    kind: UpdateKind = "update"
    message: str = ""
    rollout: int = 100
    mandatory: bool = False
    status: UpdateStatus = "active"
    launch_asset: AssetRecord | None = None
    assets: tuple[AssetRecord, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    source_update_id: str | None = None

    @property
    def is_active(self) -> bool:
        """Whether the update can still be served."""
        return self.status == "active"
