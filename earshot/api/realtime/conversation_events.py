"""The Realtime conversation session (GA, `session.type = "realtime"`) on the wire: its `session.update`
fields, its session object, and the response events of the voice agent's answers.

Hearing (input format, transcription, turn detection) is the transcription session's `RealtimeSettings`,
read and shown by the same code; the conversation adds instructions, tools, the voice and the output.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import Field, ValidationError

from earshot.api.realtime.client_events import InvalidEvent
from earshot.api.realtime.server_events import server_event
from earshot.api.realtime.session import (
    OPENAI_PCM_RATE_HZ,
    GAAudioIn,
    GAInputIn,
    GASessionIn,
    RealtimeSettings,
    TurnDetectionIn,
    _Wire,
)

Modality = Literal["audio", "text"]


class ConversationTurnDetectionIn(TurnDetectionIn):
    """server_vad, and whether a turn's end starts a response and speech interrupts one."""

    create_response: bool | None = None
    interrupt_response: bool | None = None


class ConversationInputIn(GAInputIn):
    turn_detection: ConversationTurnDetectionIn | None = None  # type: ignore[assignment]


class OutputFormatIn(_Wire):
    type: Literal["audio/pcm"]
    rate: Literal[24000] | None = None


class ConversationOutputIn(_Wire):
    format: OutputFormatIn | None = None
    voice: str | None = Field(default=None, min_length=1, max_length=40)
    speed: float | None = Field(default=None, ge=0.25, le=4.0)


class ConversationAudioIn(_Wire):
    input: ConversationInputIn | None = None
    output: ConversationOutputIn | None = None


class ConversationSessionIn(_Wire):
    """`session.update`'s `session` for a conversation."""

    type: Literal["realtime"] = "realtime"
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    audio: ConversationAudioIn | None = None
    output_modalities: list[Modality] | None = Field(default=None, min_length=1, max_length=2)


@dataclass(frozen=True, slots=True)
class ConversationSettings:
    """A conversation session's effective configuration."""

    hearing: RealtimeSettings
    agent: str
    instructions: str | None = None
    tools: tuple[dict[str, Any], ...] = ()
    voice: str = "alloy"
    speed: float = 1.0
    output_modalities: tuple[Modality, ...] = ("audio",)
    create_response: bool = True
    interrupt_response: bool = True
    session_id: str = field(default="")

    @property
    def text_only(self) -> bool:
        return "audio" not in self.output_modalities

    def updated(self, session: object, event_id: str | None) -> ConversationSettings:
        """These settings changed by a `session.update`'s session (only the fields it names)."""
        if not isinstance(session, dict):
            raise InvalidEvent("invalid_type", "session must be an object", event_id, "session")
        if session.get("type", "realtime") != "realtime":
            message = "this is a conversation: session.type must be 'realtime'"
            raise InvalidEvent("invalid_value", message, event_id, "session.type")
        try:
            update = ConversationSessionIn.model_validate(session)
        except ValidationError as e:
            first = e.errors()[0]
            param = ".".join(["session", *(str(part) for part in first["loc"])])
            raise InvalidEvent("invalid_value", f"invalid {param}: {first['msg']}", event_id, param) from e
        settings = self
        if update.instructions is not None:
            settings = replace(settings, instructions=update.instructions)
        if update.tools is not None:
            settings = replace(settings, tools=tuple(update.tools))
        if update.output_modalities is not None:
            settings = replace(settings, output_modalities=tuple(update.output_modalities))
        audio = update.audio
        if audio is not None and audio.output is not None:
            if audio.output.voice is not None:
                settings = replace(settings, voice=audio.output.voice)
            if audio.output.speed is not None:
                settings = replace(settings, speed=audio.output.speed)
        if audio is not None and audio.input is not None:
            hearing_update = GASessionIn.model_construct(audio=GAAudioIn.model_construct(input=audio.input))
            settings = replace(settings, hearing=settings.hearing.with_ga(hearing_update))
            detection = audio.input.turn_detection
            if detection is not None:
                if detection.create_response is not None:
                    settings = replace(settings, create_response=detection.create_response)
                if detection.interrupt_response is not None:
                    settings = replace(settings, interrupt_response=detection.interrupt_response)
        return settings

    def to_wire(self) -> dict[str, Any]:
        """The session object, as GA Realtime shows a conversation session."""
        hearing = self.hearing.to_wire("ga")["audio"]["input"]
        if hearing["turn_detection"] is not None:
            hearing["turn_detection"] = {
                **hearing["turn_detection"],
                "create_response": self.create_response,
                "interrupt_response": self.interrupt_response,
            }
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.session_id,
            "model": self.agent,
            "expires_at": 0,
            "instructions": self.instructions or "",
            "tools": list(self.tools),
            "tool_choice": "auto",
            "output_modalities": list(self.output_modalities),
            "audio": {
                "input": hearing,
                "output": {
                    "format": {"type": "audio/pcm", "rate": OPENAI_PCM_RATE_HZ},
                    "voice": self.voice,
                    "speed": self.speed,
                },
            },
        }


def session(suffix: str, settings: ConversationSettings) -> str:
    """`session.created` or `session.updated`."""
    return server_event({"type": f"session.{suffix}", "session": settings.to_wire()})


def _response(response_id: str, status: str, output: list[dict[str, Any]], usage: Any) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "output": output,
        "usage": usage,
    }


def response_created(response_id: str, modalities: tuple[Modality, ...]) -> str:
    body = {**_response(response_id, "in_progress", [], None), "output_modalities": list(modalities)}
    return server_event({"type": "response.created", "response": body})


def response_done(
    response_id: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, int],
    error: tuple[str, str] | None = None,
) -> str:
    body = _response(response_id, status, output, usage)
    if error is not None:
        body["status_details"] = {"type": status, "error": {"type": "server_error", "code": error[0]}}
        body["status_details"]["error"]["message"] = error[1]
    return server_event({"type": "response.done", "response": body})


def assistant_item(item_id: str, status: str, text: str | None, with_audio: bool) -> dict[str, Any]:
    """An assistant message item as the conversation shows it."""
    part: dict[str, Any] = (
        {"type": "output_audio", "transcript": text or ""}
        if with_audio
        else {"type": "output_text", "text": text}
    )
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [part] if text is not None else [],
    }


def output_item(kind: Literal["added", "done"], response_id: str, item: dict[str, Any]) -> list[str]:
    """`response.output_item.<kind>` and `conversation.item.<kind>` for one item."""
    return [
        server_event(
            {
                "type": f"response.output_item.{kind}",
                "response_id": response_id,
                "output_index": 0,
                "item": item,
            }
        ),
        server_event({"type": f"conversation.item.{kind}", "previous_item_id": None, "item": item}),
    ]


def _part_event(kind: str, response_id: str, item_id: str, **fields: Any) -> str:
    return server_event(
        {
            "type": kind,
            "response_id": response_id,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            **fields,
        }
    )


def audio_delta(response_id: str, item_id: str, audio_base64: str) -> str:
    return _part_event("response.output_audio.delta", response_id, item_id, delta=audio_base64)


def transcript_delta(response_id: str, item_id: str, text: str, with_audio: bool) -> str:
    kind = "response.output_audio_transcript.delta" if with_audio else "response.output_text.delta"
    return _part_event(kind, response_id, item_id, delta=text)


def answer_done(response_id: str, item_id: str, text: str, with_audio: bool) -> list[str]:
    if not with_audio:
        return [_part_event("response.output_text.done", response_id, item_id, text=text)]
    return [
        _part_event("response.output_audio.done", response_id, item_id),
        _part_event("response.output_audio_transcript.done", response_id, item_id, transcript=text),
    ]


def function_call_arguments(response_id: str, item: dict[str, Any]) -> list[str]:
    """`response.function_call_arguments.delta` then `.done` for a call the client runs."""
    common = {
        "response_id": response_id,
        "item_id": item["id"],
        "output_index": 0,
        "call_id": item["call_id"],
    }
    arguments = item.get("arguments", "")
    return [
        server_event({"type": "response.function_call_arguments.delta", **common, "delta": arguments}),
        server_event(
            {
                "type": "response.function_call_arguments.done",
                **common,
                "name": item["name"],
                "arguments": arguments,
            }
        ),
    ]
