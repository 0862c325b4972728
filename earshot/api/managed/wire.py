"""The managed protocol's messages (WS /ws/transcribe): the client's auth and controls, the server's events.

Pydantic validates what the client sends; the server's messages are built here as JSON text, so the
protocol class (`api/managed.py`) never spells a field name.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from earshot.api.json_messages import BadJSON, load_message

# Error codes a client can act on; the message beside each is for people.
ErrorCode = Literal[
    "AUTH_FAILED",
    "MODEL_NOT_ALLOWED",
    "INSUFFICIENT_CREDITS",
    "RATE_LIMITED",
    "UPSTREAM_ERROR",
    "BAD_REQUEST",
    "IDLE_TIMEOUT",
    "SESSION_EXPIRED",
    "SERVER_SHUTDOWN",
    "SERVER_BUSY",
]
MAX_CHANNELS = 8


class StreamConfig(BaseModel):
    """How the client's audio is encoded and what it wants back."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(default=None, min_length=1, max_length=200)
    language: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})?$")
    sample_rate: int = Field(default=16_000, ge=8_000, le=48_000)
    channels: int = Field(default=1, ge=1, le=MAX_CHANNELS)
    encoding: Literal["linear16"] = "linear16"
    interim_results: bool = True


class AuthMessage(BaseModel):
    """The first message: the earshot key and the stream's configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["auth"]
    token: str = Field(default="", max_length=512)
    config: StreamConfig = Field(default_factory=StreamConfig)


class WireError(ValueError):
    """A client message the protocol can't take; `code` and `message` go back in an `error` event."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


def parse_object(text: str) -> dict[str, object]:
    """A client text message as a JSON object, or WireError(BAD_REQUEST)."""
    try:
        message = load_message(text)
    except BadJSON as e:
        raise WireError("BAD_REQUEST", str(e)) from e
    if not isinstance(message, dict):
        raise WireError("BAD_REQUEST", "a message must be a JSON object")
    return message


def parse_auth(text: str) -> AuthMessage:
    """The first message as an AuthMessage, or WireError saying what is wrong with it."""
    message = parse_object(text)
    if message.get("type") != "auth":
        raise WireError(
            "BAD_REQUEST", 'the first message must be {"type": "auth", "token": ..., "config": ...}'
        )
    try:
        return AuthMessage.model_validate(message)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise WireError("BAD_REQUEST", f"invalid {where}: {first['msg']}") from e


def _dump(message: dict[str, object]) -> str:
    return json.dumps(message, separators=(",", ":"))


def ready(session_id: str, model: str) -> str:
    """The session is admitted: binary audio may follow."""
    return _dump({"type": "ready", "session_id": session_id, "model": model})


def transcript(text: str, is_final: bool, start: float, end: float) -> str:
    """Text for a stretch of audio: interim (may be revised) or final (never revised)."""
    return _dump(
        {
            "type": "transcript",
            "text": text,
            "is_final": is_final,
            "start": round(start, 3),
            "end": round(end, 3),
        }
    )


def utterance_end(end: float) -> str:
    """The speaker finished an utterance: every final for it has been sent."""
    return _dump({"type": "utterance_end", "end": round(end, 3)})


def credits_low(seconds_remaining: float) -> str:
    """The key's credit is under the server's threshold."""
    return _dump({"type": "credits_low", "seconds_remaining": round(seconds_remaining, 3)})


def error(code: ErrorCode, message: str) -> str:
    """Something went wrong; `code` is stable, `message` is for people."""
    return _dump({"type": "error", "code": code, "message": message})


def session_end(seconds_used: float) -> str:
    """The last message before the server closes: the seconds of audio the session counted."""
    return _dump({"type": "session_end", "seconds_used": round(seconds_used, 3)})
