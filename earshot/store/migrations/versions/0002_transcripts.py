"""Stored transcripts: POST /v1/transcripts documents, their machine and validated paragraphs.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from earshot.store.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transcripts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("language", sa.String(32), nullable=True),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("paragraphs", sa.JSON, nullable=False),
        sa.Column("validated", sa.JSON, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_transcripts"),
    )
    op.create_index("ix_transcripts_key_created", "transcripts", ["key_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_transcripts_key_created", "transcripts")
    op.drop_table("transcripts")
