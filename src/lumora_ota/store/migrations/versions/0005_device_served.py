"""Served-to records: which device was served which update, from which client address.

Statistics count a device's outcome of an update (launch, failure, ...) only when the server
earlier served that update to that device (security issue 15, item 2). Existing facts are
kept: every (device, update) with a fact gets a served-to record with the source
``device:<id>`` (one source per device, so no per-source cap applies to the history). Facts
naming no update of their project (a flood of made-up ``expo-recent-failed-update-ids``, item
3) are deleted first: they never counted in any figure.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import lumora_ota.store.models

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_served",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("update_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=220), nullable=False),
        sa.Column("at", lumora_ota.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "update_id", "device_id"),
    )
    with op.batch_alter_table("device_served", schema=None) as batch_op:
        batch_op.create_index(
            "ix_device_served_source", ["project_id", "update_id", "source"], unique=False
        )
    op.execute(
        "DELETE FROM device_update_facts WHERE NOT EXISTS (SELECT 1 FROM updates u "
        "WHERE u.id = device_update_facts.update_id "
        "AND u.project_id = device_update_facts.project_id)"
    )
    op.execute(
        "INSERT INTO device_served (project_id, update_id, device_id, source, at) "
        "SELECT project_id, update_id, device_id, 'device:' || device_id, MIN(at) "
        "FROM device_update_facts GROUP BY project_id, update_id, device_id"
    )


def downgrade() -> None:
    with op.batch_alter_table("device_served", schema=None) as batch_op:
        batch_op.drop_index("ix_device_served_source")
    op.drop_table("device_served")
