"""What the voice agent's turn loop tells its channel: a response starting, its answer's text and audio, the
calls and approvals it hands out, and how it finished. Plain data, rendered by the Realtime conversation
socket."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ResponseStatus = Literal["completed", "cancelled", "failed"]


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    response_id: str


@dataclass(frozen=True, slots=True)
class AnswerStarted:
    """An assistant message item begins."""

    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class AnswerText:
    """Text of the answer as it goes out (beside its audio, or alone when text-only)."""

    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class AnswerAudio:
    """PCM16 mono 24 kHz audio of the answer."""

    response_id: str
    item_id: str
    pcm16: bytes


@dataclass(frozen=True, slots=True)
class AnswerDone:
    response_id: str
    item: dict[str, Any]
    text: str


@dataclass(frozen=True, slots=True)
class CallOut:
    """A function call for the client to run."""

    response_id: str
    item: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ApprovalOut:
    """A call that waits for a person's approval (an `mcp_approval_request` item)."""

    response_id: str
    item: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ResponseFinished:
    response_id: str
    status: ResponseStatus
    output: list[dict[str, Any]]
    usage: dict[str, int]
    error: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class TurnRefused:
    """No response could start (another turn of the session runs)."""

    code: str
    message: str


VoiceEvent = (
    ResponseStarted
    | AnswerStarted
    | AnswerText
    | AnswerAudio
    | AnswerDone
    | CallOut
    | ApprovalOut
    | ResponseFinished
    | TurnRefused
)
