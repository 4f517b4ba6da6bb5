"""Initial schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 23:06:29.384480
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import lumora_ota.store.models

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", lumora_ota.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=36), nullable=True),
        sa.Column("project_id", sa.String(length=36), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_project_id"), ["project_id"], unique=False)

    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", lumora_ota.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("br_size", sa.BigInteger(), nullable=True),
        sa.Column("gzip_size", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_table(
        "delivery_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "device_days",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("channel", sa.String(length=100), nullable=False),
        sa.Column("device_id", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "day", "channel", "device_id"),
    )
    with op.batch_alter_table("device_days", schema=None) as batch_op:
        batch_op.create_index("ix_device_days_day", ["project_id", "day"], unique=False)

    op.create_table(
        "device_state",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=100), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("current_update_id", sa.String(length=64), nullable=True),
        sa.Column("embedded_update_id", sa.String(length=64), nullable=True),
        sa.Column("first_seen", lumora_ota.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen", lumora_ota.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "device_id"),
    )
    with op.batch_alter_table("device_state", schema=None) as batch_op:
        batch_op.create_index("ix_device_state_seen", ["project_id", "last_seen"], unique=False)

    op.create_table(
        "device_update_facts",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.String(length=200), nullable=False),
        sa.Column("update_id", sa.String(length=64), nullable=False),
        sa.Column("fact", sa.String(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("at", lumora_ota.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "device_id", "update_id", "fact"),
    )
    with op.batch_alter_table("device_update_facts", schema=None) as batch_op:
        batch_op.create_index("ix_device_update_facts_day", ["project_id", "day"], unique=False)
        batch_op.create_index(
            "ix_device_update_facts_update", ["project_id", "update_id", "fact"], unique=False
        )

    op.create_table(
        "projects",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", lumora_ota.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("auto_pause_on_failure", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("slug"),
    )
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "stat_counters",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("channel", sa.String(length=100), nullable=False),
        sa.Column("update_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "channel", "update_id", "day", "metric"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", lumora_ota.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", lumora_ota.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", lumora_ota.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "last_used_at", lumora_ota.store.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
    )
    op.create_table(
        "channels",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", lumora_ota.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "name", name="uq_channels_project_name"),
    )
    op.create_table(
        "embedded_bundles",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("embedded_update_id", sa.String(length=64), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("runtime_version", sa.String(length=100), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", lumora_ota.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["sha256"],
            ["blobs.sha256"],
        ),
        sa.PrimaryKeyConstraint("project_id", "embedded_update_id"),
    )
    with op.batch_alter_table("embedded_bundles", schema=None) as batch_op:
        batch_op.create_index(
            "ix_embedded_bundles_stream",
            ["project_id", "platform", "runtime_version"],
            unique=False,
        )

    op.create_table(
        "project_blobs",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["sha256"],
            ["blobs.sha256"],
        ),
        sa.PrimaryKeyConstraint("project_id", "sha256"),
    )
    op.create_table(
        "signing_keys",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("keyid", sa.String(length=100), nullable=False),
        sa.Column("private_key_pem", sa.Text(), nullable=True),
        sa.Column("private_key_path", sa.Text(), nullable=True),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("created_at", lumora_ota.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id"),
    )
    op.create_table(
        "update_groups",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", lumora_ota.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "updates",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("group_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("channel_id", sa.String(length=36), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("runtime_version", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", lumora_ota.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("rollout", sa.Integer(), nullable=False),
        sa.Column("mandatory", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source_update_id", sa.String(length=36), nullable=True),
        sa.Column("metadata_json", sa.JSON(), nullable=False),
        sa.Column("extra_json", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["group_id"], ["update_groups.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("updates", schema=None) as batch_op:
        batch_op.create_index(
            "ix_updates_channel_lookup",
            ["project_id", "channel_id", "platform", "created_at"],
            unique=False,
        )

    op.create_table(
        "delta_patches",
        sa.Column("target_update_id", sa.String(length=36), nullable=False),
        sa.Column("base_update_id", sa.String(length=64), nullable=False),
        sa.Column("base_sha256", sa.String(length=64), nullable=False),
        sa.Column("target_sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("useful", sa.Boolean(), nullable=False),
        sa.Column("created_at", lumora_ota.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["target_update_id"], ["updates.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("target_update_id", "base_update_id"),
    )
    op.create_table(
        "update_assets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("update_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("file_extension", sa.String(length=32), nullable=False),
        sa.Column("is_launch_asset", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sha256"],
            ["blobs.sha256"],
        ),
        sa.ForeignKeyConstraint(["update_id"], ["updates.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("update_id", "key", name="uq_update_assets_key"),
    )
    # The single row whose revision every delivery-relevant change bumps.
    op.bulk_insert(
        sa.table(
            "delivery_state", sa.column("id", sa.Integer), sa.column("revision", sa.BigInteger)
        ),
        [{"id": 1, "revision": 0}],
    )


def downgrade() -> None:
    op.drop_table("update_assets")
    op.drop_table("delta_patches")
    with op.batch_alter_table("updates", schema=None) as batch_op:
        batch_op.drop_index("ix_updates_channel_lookup")

    op.drop_table("updates")
    op.drop_table("update_groups")
    op.drop_table("signing_keys")
    op.drop_table("project_blobs")
    with op.batch_alter_table("embedded_bundles", schema=None) as batch_op:
        batch_op.drop_index("ix_embedded_bundles_stream")

    op.drop_table("embedded_bundles")
    op.drop_table("channels")
    op.drop_table("api_keys")
    op.drop_table("stat_counters")
    op.drop_table("server_secrets")
    op.drop_table("projects")
    with op.batch_alter_table("device_update_facts", schema=None) as batch_op:
        batch_op.drop_index("ix_device_update_facts_update")
        batch_op.drop_index("ix_device_update_facts_day")

    op.drop_table("device_update_facts")
    with op.batch_alter_table("device_state", schema=None) as batch_op:
        batch_op.drop_index("ix_device_state_seen")

    op.drop_table("device_state")
    with op.batch_alter_table("device_days", schema=None) as batch_op:
        batch_op.drop_index("ix_device_days_day")

    op.drop_table("device_days")
    op.drop_table("delivery_state")
    op.drop_table("blobs")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_project_id"))
        batch_op.drop_index(batch_op.f("ix_audit_log_at"))

    op.drop_table("audit_log")
