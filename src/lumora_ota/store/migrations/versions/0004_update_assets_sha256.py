"""Index update assets by content hash.

The asset route serves a blob only when some update references it (issue 15: uploaded but
never published files are not downloadable); a hash the in-memory index does not know yet
(another process just published it) is looked up by ``sha256``.

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-30 19:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_update_assets_sha256", "update_assets", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_update_assets_sha256", table_name="update_assets")
