"""Index update assets by content hash; dashboard sessions voided by signing out.

The asset route serves a blob only when some update references it (issue 15: uploaded but
never published files are not downloadable); a hash the in-memory index does not know yet
(another process just published it) is looked up by ``sha256``.

``api_keys.sessions_void_before_ms``: signing out of the dashboard voids every session cookie
of the key issued until then, on every server process (cookies are otherwise stateless).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_update_assets_sha256", "update_assets", ["sha256"])
    op.add_column("api_keys", sa.Column("sessions_void_before_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "sessions_void_before_ms")  # plain DROP COLUMN, as in 0003
    op.drop_index("ix_update_assets_sha256", table_name="update_assets")
