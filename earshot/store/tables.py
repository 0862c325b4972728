"""The database schema: API keys, usage records, runtime dials, stored transcripts and sessions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone, so store naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class ApiKeyRow(Base):
    """An API key; only a SHA-256 hash of its secret is kept."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64))
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    credits_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_sessions: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class UsageRow(Base):
    """One metered request or session; `outcome` is NULL while it is still running."""

    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_records_key_started", "key_id", "started_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    route: Mapped[str] = mapped_column(String(64))
    audio_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    debited_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    quantity: Mapped[float] = mapped_column(Float, default=0.0)
    unit: Mapped[str] = mapped_column(String(16), default="second")
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    # Chat models' tokens (sessions' text turns), beside the audio.
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    characters: Mapped[int] = mapped_column(BigInteger, default=0)
    outcome: Mapped[str | None] = mapped_column(String(20), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DialRow(Base):
    """One runtime setting changed from its default, as JSON."""

    __tablename__ = "dials"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TranscriptRow(Base):
    """A stored transcript: the machine's paragraphs and, once reviewed, the validated ones beside them."""

    __tablename__ = "transcripts"
    __table_args__ = (Index("ix_transcripts_key_created", "key_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # NULL for documents made while the server had no keys (anonymous).
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    name: Mapped[str] = mapped_column(String(500))
    model: Mapped[str] = mapped_column(String(200))
    language: Mapped[str | None] = mapped_column(String(32), nullable=True)
    duration_s: Mapped[float] = mapped_column(Float)
    paragraphs: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    validated: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SessionRow(Base):
    """A conversation kept by the server, owned by a key (and optionally one of the app's end users)."""

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_key_created", "key_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # NULL for sessions made while the server had no keys (anonymous).
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    end_user: Mapped[str | None] = mapped_column(String(200), nullable=True)
    chat_model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    instructions: Mapped[str | None] = mapped_column(Text, nullable=True)
    tools: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    voice: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SessionItemRow(Base):
    """One item of a session's conversation, in order; an approval request carries its decision once made."""

    __tablename__ = "session_items"
    __table_args__ = (UniqueConstraint("session_id", "position", name="uq_session_items_position"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(40))
    position: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(32))
    # The function call an item belongs to (calls, outputs and approval requests).
    call_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    approve: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


metadata = Base.metadata
