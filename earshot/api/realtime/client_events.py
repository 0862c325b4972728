"""Reading the OpenAI Realtime client events, the same for the local session and the relay.

Each check raises `InvalidEvent`, which becomes the `invalid_request_error` event the client is answered with.
"""

from __future__ import annotations

import binascii
from typing import Any

from pydantic import ValidationError

from earshot.api.json_messages import BadJSON, load_message
from earshot.api.live.actions import Send
from earshot.api.realtime import server_events as events
from earshot.api.realtime.session import BetaSessionIn, Dialect, GASessionIn, RealtimeSettings


class InvalidEvent(Exception):
    """A client event that can't be acted on, and the `invalid_request_error` that says why."""

    def __init__(self, code: str, message: str, event_id: str | None, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.event_id = event_id
        self.param = param

    def send(self) -> Send:
        """The `error` event answering the client."""
        return Send(events.error("invalid_request_error", self.code, self.message, self.event_id, self.param))


def binary_not_supported() -> Send:
    """The error for a binary frame: the events are JSON text."""
    return InvalidEvent("binary_not_supported", "send JSON text events", None).send()


def parse_event(text: str) -> tuple[dict[str, Any], str | None]:
    """One client event as a JSON object, and its `event_id`."""
    try:
        message = load_message(text)
    except BadJSON as e:
        raise InvalidEvent("invalid_json", str(e), None) from e
    if not isinstance(message, dict):
        raise InvalidEvent("invalid_event", "an event must be a JSON object", None)
    event_id = message.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise InvalidEvent("invalid_type", "event_id must be a string", None, "event_id")
    return message, event_id


def unknown_event(kind: object, event_id: str | None) -> InvalidEvent:
    """The error for an event type this endpoint does not take."""
    shown = kind if isinstance(kind, str) else repr(kind)
    return InvalidEvent("unknown_event_type", f"unknown event type {shown}", event_id, "type")


def appended_audio(message: dict[str, Any], event_id: str | None) -> tuple[str, bytes]:
    """An `input_audio_buffer.append` event's base64 audio, and the bytes it decodes to."""
    audio = message.get("audio")
    if not isinstance(audio, str):
        raise InvalidEvent("invalid_type", "audio must be a base64 string", event_id, "audio")
    try:
        return audio, binascii.a2b_base64(audio, strict_mode=True)
    except ValueError as e:  # binascii.Error, or a plain ValueError for non-ASCII text
        raise InvalidEvent("invalid_base64", "audio is not valid base64", event_id, "audio") from e


def update_dialect(kind: str, session: object, event_id: str | None) -> tuple[Dialect, dict[str, Any]]:
    """The dialect a session update event is in (beta for `transcription_session.update`), and its session."""
    if not isinstance(session, dict):
        raise InvalidEvent("invalid_type", "session must be an object", event_id, "session")
    if kind == "transcription_session.update":
        return "beta", session
    if session.get("type", "transcription") != "transcription":
        message = "this endpoint serves transcription sessions: session.type must be 'transcription'"
        raise InvalidEvent("invalid_value", message, event_id, "session.type")
    return "ga", session


def updated_settings(
    settings: RealtimeSettings, dialect: Dialect, session: dict[str, Any], event_id: str | None
) -> RealtimeSettings:
    """`settings` changed by a session update's `session`, validated in its dialect."""
    try:
        if dialect == "beta":
            return settings.with_beta(BetaSessionIn.model_validate(session))
        return settings.with_ga(GASessionIn.model_validate(session))
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(["session", *(str(part) for part in first["loc"])])
        raise InvalidEvent("invalid_value", f"invalid {param}: {first['msg']}", event_id, param) from e


def model_param(dialect: Dialect) -> str:
    """Where the transcription model sits in a session update of `dialect`."""
    if dialect == "beta":
        return "session.input_audio_transcription.model"
    return "session.audio.input.transcription.model"
