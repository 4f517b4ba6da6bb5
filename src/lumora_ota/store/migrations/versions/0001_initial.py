"""Initial schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

NOTE: while the schema settles during initial development this revision creates the tables
from the models; it is regenerated as explicit operations before the first release.
"""

from collections.abc import Sequence

from alembic import op

from lumora_ota.store.models import Base, DeliveryState

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    Base.metadata.create_all(bind)
    op.bulk_insert(DeliveryState.__table__, [{"id": 1, "revision": 0}])  # type: ignore[arg-type]


def downgrade() -> None:
    Base.metadata.drop_all(op.get_bind())
