"""Rows as the rest of earshot sees them: plain dataclasses, no ORM state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

KeyState = Literal["active", "revoked"]
Outcome = Literal[
    "ok",
    "client_closed",
    "upstream_error",
    "rejected",
    "revoked",
    "timeout",
    "max_duration",
    "insufficient_credits",
    "shutdown",
    "error",
]
Unit = Literal["second", "minute", "character"]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key's stored settings; `secret_hash` never leaves the accounts package."""

    id: str
    name: str
    secret_hash: str
    models: tuple[str, ...] | None
    credits_ms: int | None
    rpm: int | None
    max_sessions: int | None
    expires_at: datetime | None
    state: KeyState
    created_at: datetime
    updated_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One metered request or session."""

    id: str
    key_id: str | None
    model: str | None
    route: str
    audio_ms: int
    debited_ms: int
    quantity: float
    unit: Unit
    cost: float
    outcome: Outcome | None
    started_at: datetime
    ended_at: datetime | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Characters of text synthesized (speech requests, the voice agent's answers).
    characters: int = 0


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """Usage summed over one group (a model, a day or a key)."""

    group: str | None
    requests: int
    audio_ms: int
    quantity: float
    cost: float
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class TranscriptRecord:
    """A stored transcript; paragraphs are the wire's JSON objects (`api/transcripts/documents.py`)."""

    id: str
    key_id: str | None
    name: str
    model: str
    language: str | None
    duration_s: float
    paragraphs: tuple[dict[str, Any], ...]
    validated: tuple[dict[str, Any], ...] | None
    created_at: datetime
    updated_at: datetime


SessionState = Literal["active", "ended"]
ItemType = Literal[
    "message", "function_call", "function_call_output", "mcp_approval_request", "mcp_approval_response"
]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A stored conversation; `tools` are OpenAI function tools (each may carry `requires_approval`)."""

    id: str
    key_id: str | None
    end_user: str | None
    chat_model: str | None
    instructions: str | None
    tools: tuple[dict[str, Any], ...]
    voice: str | None
    state: SessionState
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewItem:
    """An item to add to a conversation: its wire shape (`data`, with its `id`) and the call it belongs to."""

    type: ItemType
    data: dict[str, Any]
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class SessionItemRecord:
    """One stored item of a conversation at `position` (1, 2, ...); approval requests carry their decision."""

    id: str
    session_id: str
    position: int
    type: ItemType
    call_id: str | None
    data: dict[str, Any]
    approve: bool | None
    reason: str | None
    decided_at: datetime | None
    created_at: datetime
