"""The OpenAI Realtime server events earshot sends, as JSON text, each with its own `event_id`."""

from __future__ import annotations

import json
import uuid
from typing import Any

from earshot.api.realtime.session import Dialect, RealtimeSettings


def new_item_id() -> str:
    """An id for a user audio item."""
    return f"item_{uuid.uuid4().hex[:22]}"


def new_session_id() -> str:
    """An id for a transcription session."""
    return f"sess_{uuid.uuid4().hex[:22]}"


def server_event(payload: dict[str, Any]) -> str:
    """One server event as compact JSON, with a fresh `event_id`."""
    return json.dumps({"event_id": f"event_{uuid.uuid4().hex[:22]}", **payload}, separators=(",", ":"))


def error(kind: str, code: str, message: str, event_id: str | None, param: str | None = None) -> str:
    """An `error` event; `event_id` inside it names the client event it answers."""
    details = {"type": kind, "code": code, "message": message, "param": param, "event_id": event_id}
    return server_event({"type": "error", "error": details})


def session(dialect: Dialect, suffix: str, settings: RealtimeSettings) -> str:
    """`session.created|updated` (GA) or `transcription_session.created|updated` (beta)."""
    prefix = "transcription_session" if dialect == "beta" else "session"
    return server_event({"type": f"{prefix}.{suffix}", "session": settings.to_wire(dialect)})


def speech_started(item_id: str, audio_start_ms: int) -> str:
    return server_event(
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": audio_start_ms, "item_id": item_id}
    )


def speech_stopped(item_id: str, audio_end_ms: int) -> str:
    return server_event(
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": audio_end_ms, "item_id": item_id}
    )


def committed(dialect: Dialect, item_id: str, previous_item_id: str | None) -> list[str]:
    """`input_audio_buffer.committed`, then the item's `conversation.item.created` (beta) or `.added` (GA)."""
    item = {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": None}],
    }
    created = "conversation.item.created" if dialect == "beta" else "conversation.item.added"
    return [
        server_event(
            {"type": "input_audio_buffer.committed", "previous_item_id": previous_item_id, "item_id": item_id}
        ),
        server_event({"type": created, "previous_item_id": previous_item_id, "item": item}),
    ]


def cleared() -> str:
    return server_event({"type": "input_audio_buffer.cleared"})


def delta(item_id: str, text: str) -> str:
    """Text appended to an item's transcript."""
    return server_event(
        {
            "type": "conversation.item.input_audio_transcription.delta",
            "item_id": item_id,
            "content_index": 0,
            "delta": text,
        }
    )


def completed(item_id: str, transcript: str, seconds: float) -> str:
    """An item's whole transcript, with the seconds of audio it covers."""
    return server_event(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item_id,
            "content_index": 0,
            "transcript": transcript,
            "usage": {"type": "duration", "seconds": round(seconds, 3)},
        }
    )


def failed(item_id: str, code: str, message: str) -> str:
    """An item whose transcription failed."""
    failure = {"type": "transcription_failed", "code": code, "message": message, "param": None}
    return server_event(
        {
            "type": "conversation.item.input_audio_transcription.failed",
            "item_id": item_id,
            "content_index": 0,
            "error": failure,
        }
    )
