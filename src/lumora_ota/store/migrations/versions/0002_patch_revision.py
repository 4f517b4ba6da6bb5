"""Patch revision: a revision of its own for delta patches.

The delta-patch worker used to bump ``delivery_state.revision`` after each patch it recorded,
which emptied every server's whole delivery cache. It bumps ``patch_revision`` instead, which
only the patch index watches.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "delivery_state",
        sa.Column("patch_revision", sa.BigInteger(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("delivery_state", schema=None) as batch_op:
        batch_op.drop_column("patch_revision")
