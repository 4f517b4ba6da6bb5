"""The database schema, as SQLAlchemy 2 declarative models.

Alembic migrations under ``store/migrations`` create exactly this schema; a test compares the
two so they cannot drift. Identifiers are UUID strings so SQLite and PostgreSQL behave alike;
times are timezone-aware UTC.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def new_id() -> str:
    """A fresh random UUID as a string."""
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes; SQLite hands back naive ones, which are UTC by construction."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base of every table."""


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Auto-pause an update's rollout when its launch-failure rate crosses the threshold.
    auto_pause_on_failure: Mapped[bool] = mapped_column(Boolean, default=False)

    channels: Mapped[list[Channel]] = relationship(back_populates="project")


class Channel(Base):
    """A release channel; the management API calls these "deployments"."""

    __tablename__ = "channels"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_channels_project_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A paused channel serves no update (devices keep what they run), as EAS's channel:pause.
    paused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    project: Mapped[Project] = relationship(back_populates="channels")


class Blob(Base):
    """A stored file, once per content hash, shared by every update that uses it."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Sizes of the precomputed compressed variants, None where none is stored (not worth it).
    br_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    gzip_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Lowercase hex md5 of the bytes: Metro's asset hash, the manifest ``key`` (issue 14).
    # Computed by the server (at upload, or from the stored bytes), never taken from a client.
    md5: Mapped[str | None] = mapped_column(String(32), nullable=True)


class ProjectBlob(Base):
    """Which project uploaded which blob: the missing-hash check answers per project, so one
    project cannot probe another's files."""

    __tablename__ = "project_blobs"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"), primary_key=True)


class UpdateGroup(Base):
    """One publish: the updates it created for each platform share this group."""

    __tablename__ = "update_groups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    message: Mapped[str] = mapped_column(Text, default="")


class Update(Base):
    """One platform's update, or a roll-back-to-embedded marker (``kind``)."""

    __tablename__ = "updates"
    __table_args__ = (
        Index("ix_updates_channel_lookup", "project_id", "channel_id", "platform", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    group_id: Mapped[str] = mapped_column(ForeignKey("update_groups.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    channel_id: Mapped[str] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(16))
    runtime_version: Mapped[str] = mapped_column(String(100))
    # "update" or "rollback_to_embedded"
    kind: Mapped[str] = mapped_column(String(32), default="update")
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    rollout: Mapped[int] = mapped_column(Integer, default=100)
    mandatory: Mapped[bool] = mapped_column(Boolean, default=False)
    # "active" or "rolled_back"
    status: Mapped[str] = mapped_column(String(16), default="active")
    # Set when this update re-publishes or promotes another one.
    source_update_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    metadata_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    extra_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str | None] = mapped_column(String(36), nullable=True)

    assets: Mapped[list[UpdateAsset]] = relationship(
        back_populates="update", order_by="UpdateAsset.position", cascade="all, delete-orphan"
    )
    # Many-to-one, loaded with the update (one join) so records carry the channel name.
    channel: Mapped[Channel] = relationship(lazy="joined")


class UpdateAsset(Base):
    """An asset of an update: the launch asset has ``is_launch_asset`` set."""

    __tablename__ = "update_assets"
    __table_args__ = (
        UniqueConstraint("update_id", "key", name="uq_update_assets_key"),
        Index("ix_update_assets_sha256", "sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    update_id: Mapped[str] = mapped_column(ForeignKey("updates.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(255))
    file_extension: Mapped[str] = mapped_column(String(32), default="")
    is_launch_asset: Mapped[bool] = mapped_column(Boolean, default=False)
    # The blob's md5 (``Blob.md5``), kept here so loading an update's manifest needs no join.
    md5: Mapped[str | None] = mapped_column(String(32), nullable=True)

    update: Mapped[Update] = relationship(back_populates="assets")


class ApiKey(Base):
    """A management API key. Only a SHA-256 of the secret is kept."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # "admin", "publish" or "read"
    role: Mapped[str] = mapped_column(String(16))
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Dashboard sessions of this key issued before this instant (Unix milliseconds) are
    # void: set by signing out, so a copied cookie dies with the sign-out.
    sessions_void_before_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class AuditEntry(Base):
    """Who did what, when, through the management API."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    key_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    project_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(200), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class SigningKey(Base):
    """A project's manifest-signing key pair. The private key is kept as PEM here, or read
    from ``private_key_path`` (mode 0600) when the operator prefers a file."""

    __tablename__ = "signing_keys"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    keyid: Mapped[str] = mapped_column(String(100))
    private_key_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    private_key_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    certificate_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # "server": the server signs with the key above. "publisher": the publisher keeps the
    # private key (none is stored) and uploads signatures (``PublisherSignature``); the
    # server's own online timestamp key signs only freshness statements (issue 20).
    mode: Mapped[str] = mapped_column(String(16), default="server", server_default="server")
    timestamp_key_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    timestamp_certificate_pem: Mapped[str | None] = mapped_column(Text, nullable=True)


class PublisherSignature(Base):
    """A signature the publisher made over one device body (a manifest or a directive) of a
    project in publisher-held mode, with the exact bytes it covers (frozen: the server serves
    a body only when its SHA-256 has a signature here)."""

    __tablename__ = "publisher_signatures"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    body_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The update (or roll-back-to-embedded marker) the body belongs to; None for the
    # constant noUpdateAvailable directive.
    update_id: Mapped[str | None] = mapped_column(
        ForeignKey("updates.id", ondelete="CASCADE"), nullable=True, index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeliveryState(Base):
    """A single row whose revision every delivery-relevant change bumps, so each server
    process knows when its in-memory delivery cache is stale without querying per request.

    ``patch_revision`` is bumped by the delta-patch worker when it records patches: only the
    patch index (``server/device/patches.py``) reloads on it, the delivery cache does not."""

    __tablename__ = "delivery_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    patch_revision: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


# ---------------------------------------------------------------- delta updates (store/patches.py)


class DeltaPatch(Base):
    """A bsdiff patch from a base update's launch asset to a target update's, stored in the
    blob store as ``{target_sha256}.from-{base_sha256}.bsdiff``. ``base_update_id`` is an
    update id or a registered embedded update id (no foreign key). ``useful`` says whether the
    patch beats the compressed full bundle enough to be served."""

    __tablename__ = "delta_patches"

    target_update_id: Mapped[str] = mapped_column(
        ForeignKey("updates.id", ondelete="CASCADE"), primary_key=True
    )
    base_update_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    base_sha256: Mapped[str] = mapped_column(String(64))
    target_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    useful: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EmbeddedBundle(Base):
    """The launch asset embedded in a store build (a blob uploaded for the project), so the
    first update after an install can be delivered as a patch from it."""

    __tablename__ = "embedded_bundles"
    __table_args__ = (
        Index("ix_embedded_bundles_stream", "project_id", "platform", "runtime_version"),
    )

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    embedded_update_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    runtime_version: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# ---------------------------------------------------------------- statistics (owned by stats.py)


class StatCounter(Base):
    """An additive counter per project, channel, update, UTC day and metric.

    Server processes flush their in-memory counts with ``value = value + excluded.value``
    upserts, so any number of processes add up. Empty strings stand for "none" (a check that
    served no update, a server-wide figure) because primary-key columns cannot be NULL.
    """

    __tablename__ = "stat_counters"

    project_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    channel: Mapped[str] = mapped_column(String(100), primary_key=True)
    update_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class DeviceState(Base):
    """What a device last told us: the update it runs, its channel and when it was seen.
    Active-device figures count these rows; the newest observation wins across processes."""

    __tablename__ = "device_state"
    __table_args__ = (Index("ix_device_state_seen", "project_id", "last_seen"),)

    project_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(String(100), default="")
    platform: Mapped[str] = mapped_column(String(16), default="")
    current_update_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    embedded_update_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeviceUpdateFact(Base):
    """A fact about one device and one update (downloaded, installed, launched, failed to
    launch, rolled back), stored once however often it is reported, so figures count devices
    and cannot be inflated by retries or repeated headers."""

    __tablename__ = "device_update_facts"
    __table_args__ = (
        Index("ix_device_update_facts_update", "project_id", "update_id", "fact"),
        Index("ix_device_update_facts_day", "project_id", "day"),
    )

    project_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    update_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fact: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeviceServed(Base):
    """The server answered ``device_id``'s check with ``update_id`` (a served-to record), from
    ``source`` (the client address; an IPv6 /64). Only devices served an update can report
    outcomes of it: facts without this record count in no figure (security: anonymous devices
    cannot invent launches or failures of an update they were never sent). Legacy rows
    (before this record existed) have the source ``device:<id>``."""

    __tablename__ = "device_served"
    __table_args__ = (Index("ix_device_served_source", "project_id", "update_id", "source"),)

    project_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    update_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    source: Mapped[str] = mapped_column(String(220), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Why it was served, when first served (issue 19): {"channel", "pinned", "rollout"}.
    reason: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class DeviceDay(Base):
    """A device that checked in on a UTC day through a channel, stored once: the source of
    exact unique-device figures per day and range."""

    __tablename__ = "device_days"
    __table_args__ = (Index("ix_device_days_day", "project_id", "day"),)

    project_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    channel: Mapped[str] = mapped_column(String(100), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(200), primary_key=True)


class ServerSecret(Base):
    """Per-install secrets shared by every server process (e.g. the dashboard session key)."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


# ---------------------------------------------------------------- progressive delivery (issue 19)


class RolloutPlan(Base):
    """A rollout plan of one update: its rollout moves through ``steps`` (percentages), one
    step per ``step_seconds`` once the gate holds (``domain/plans.py``); ``status`` is
    ``active``, ``halted`` (failure rate above ``max_failure_rate``; ``halt_reason`` says
    why) or ``completed``. ``step_index`` only moves through a conditional UPDATE, so each
    step happens once however many server processes look at it."""

    __tablename__ = "rollout_plans"
    __table_args__ = (Index("ix_rollout_plans_status", "status"),)

    update_id: Mapped[str] = mapped_column(
        ForeignKey("updates.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(String(36))
    steps: Mapped[list[int]] = mapped_column(JSON)
    step_seconds: Mapped[int] = mapped_column(Integer)
    min_launches: Mapped[int] = mapped_column(Integer)
    max_failure_rate: Mapped[float] = mapped_column(Float)
    step_index: Mapped[int] = mapped_column(Integer, default=0)
    step_started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="active")
    halt_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Webhook(Base):
    """A project's webhook: events of the listed types are POSTed to ``url``, signed with
    ``secret`` (HMAC-SHA256, shown once at creation)."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_project", "project_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """The outbox: one event for one webhook, written in the transaction of the change it
    reports, sent by the delivery worker (``server/webhooks.py``) until answered 2xx or out
    of retry time. ``claimed_until`` is the lease of the process sending it."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook", "webhook_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # "pending", "delivered" or "failed" (retry time used up)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # No retry after this instant: set at the first attempt (and again by a redelivery).
    retry_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookAttempt(Base):
    """One attempt to send a delivery: the answer's status code or the error."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)


class DevicePin(Base):
    """A device served a named channel whatever channel it asks for (QA and beta devices).
    Set by an admin through the management API; loaded by the delivery cache once per
    generation, so pinning costs devices no query."""

    __tablename__ = "device_pins"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
