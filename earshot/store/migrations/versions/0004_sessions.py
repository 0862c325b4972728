"""Sessions: conversations owned by a key, their items in order; chat tokens on usage records.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from earshot.store.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("end_user", sa.String(200), nullable=True),
        sa.Column("chat_model", sa.String(200), nullable=True),
        sa.Column("instructions", sa.Text, nullable=True),
        sa.Column("tools", sa.JSON, nullable=False),
        sa.Column("voice", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("ended_at", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
    )
    op.create_index("ix_sessions_key_created", "sessions", ["key_id", "created_at"])
    op.create_table(
        "session_items",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(40), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("call_id", sa.String(128), nullable=True),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("approve", sa.Boolean, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("decided_at", UTCDateTime, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_session_items"),
        sa.UniqueConstraint("session_id", "position", name="uq_session_items_position"),
    )
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("prompt_tokens", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("completion_tokens", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("completion_tokens")
        batch.drop_column("prompt_tokens")
    op.drop_table("session_items")
    op.drop_index("ix_sessions_key_created", "sessions")
    op.drop_table("sessions")
