"""Asset md5: the manifest ``key`` of every asset is the md5 of its bytes (issue 14).

Adds ``blobs.md5`` and ``update_assets.md5``. Updates stored before this revision had keys
derived from their SHA-256, which expo-asset cannot look files up by; when the migration runs
with the blob store at hand (``lumora serve``, the application's start), it computes the md5 of
every stored blob and fills both columns, so those updates are served with md5 keys at once.
Without the blob store (``lumora keys --data-dir``) the columns stay empty and the next server
start fills them (``store.digests.fill_missing_md5``, the same code).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("blobs", sa.Column("md5", sa.String(length=32), nullable=True))
    op.add_column("update_assets", sa.Column("md5", sa.String(length=32), nullable=True))
    config = op.get_context().config
    blobs = config.attributes.get("blobs") if config is not None else None
    if blobs is not None:
        from lumora_ota.store.digests import fill_missing_md5

        fill_missing_md5(op.get_bind(), blobs)


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite >= 3.35 has it): a batch rebuild of ``blobs`` would trip the
    # foreign keys of the tables that reference it.
    op.drop_column("update_assets", "md5")
    op.drop_column("blobs", "md5")
