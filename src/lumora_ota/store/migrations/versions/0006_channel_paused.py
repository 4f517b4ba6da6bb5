"""Channel pause: a paused channel serves no update (as EAS's ``channel:pause``).

Channels already stored are not paused.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "channels",
        sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite >= 3.35 has it): a batch rebuild of ``channels`` would
    # delete every update through their ON DELETE CASCADE foreign keys.
    op.drop_column("channels", "paused")
