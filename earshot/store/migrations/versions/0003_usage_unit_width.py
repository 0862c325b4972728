"""Usage units up to 16 characters, for speech synthesis's `character`.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite does not enforce a VARCHAR's length (and can't alter a column's type): nothing to do there.
    if op.get_context().dialect.name != "sqlite":
        op.alter_column("usage_records", "unit", type_=sa.String(16), existing_type=sa.String(8))


def downgrade() -> None:
    if op.get_context().dialect.name != "sqlite":
        op.alter_column("usage_records", "unit", type_=sa.String(8), existing_type=sa.String(16))
