"""Publisher-held signing keys (issue 20): a signing mode per project, the server's online
timestamp key, and the publisher's signatures over frozen device bodies.

Projects already signing keep the server-held mode.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 20:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from lumora_ota.store.models import UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("mode", sa.String(length=16), server_default="server", nullable=False)
        )
        batch_op.add_column(sa.Column("timestamp_key_pem", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("timestamp_certificate_pem", sa.Text(), nullable=True))
    op.create_table(
        "publisher_signatures",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("update_id", sa.String(length=36), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["update_id"], ["updates.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id", "body_sha256"),
    )
    op.create_index(
        op.f("ix_publisher_signatures_update_id"),
        "publisher_signatures",
        ["update_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_publisher_signatures_update_id"), table_name="publisher_signatures")
    op.drop_table("publisher_signatures")
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.drop_column("timestamp_certificate_pem")
        batch_op.drop_column("timestamp_key_pem")
        batch_op.drop_column("mode")
