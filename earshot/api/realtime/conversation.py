"""The OpenAI Realtime conversation (the voice agent), sans-I/O: `ConversationProtocol`, GA dialect.

Hearing is the transcription session's (`RealtimeProtocol`: input audio, server VAD, the user's transcript);
this class adds what a conversation does with it: a finished user turn, a `response.create` or a user text
item starts a response; speech over a response in flight, or `response.cancel`, cancels it; the voice turn
loop's events (`voice/voice_turns.py`) become response events. `conversation_socket.py` runs it in the
live socket shell.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from earshot.api.live.actions import Action, ChannelAction, Configure, Send
from earshot.api.realtime import conversation_events as wire
from earshot.api.realtime import server_events as events
from earshot.api.realtime.client_events import InvalidEvent
from earshot.api.realtime.conversation_events import ConversationSettings
from earshot.api.realtime.protocol import RealtimeProtocol
from earshot.audio.raw import RawAudioReader
from earshot.store.records import NewItem
from earshot.streaming.events import SessionEvent, SpeechStarted, UtteranceEnd
from earshot.streaming.live_config import LiveConfig
from earshot.voice.conversation import function_call_output, user_message
from earshot.voice.voice_events import (
    AnswerAudio,
    AnswerDone,
    AnswerStarted,
    AnswerText,
    ApprovalOut,
    CallOut,
    ResponseFinished,
    ResponseStarted,
    TurnRefused,
    VoiceEvent,
)

# How far into a pause the engine starts the turn's final decode (at most half the silence that ends a
# turn): the answer then starts about when the VAD ends the turn, not a decode later.
PREPARE_FINAL_PAUSE_MS = 100


@dataclass(frozen=True, slots=True)
class Respond(ChannelAction):
    """Start a response, after storing `opening` (the user's item, a call's output)."""

    opening: list[NewItem]


@dataclass(frozen=True, slots=True)
class Remember(ChannelAction):
    """Store items in the conversation without a response (yet)."""

    items: list[NewItem]
    answered_call: bool = False


@dataclass(frozen=True, slots=True)
class CancelResponse(ChannelAction):
    """Cancel the response in flight (barge-in, `response.cancel`)."""


@dataclass(frozen=True, slots=True)
class Truncate(ChannelAction):
    """The client played only `audio_end_ms` of an assistant item."""

    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class DecideApproval(ChannelAction):
    """The socket's decision on an approval request (first decision wins, across channels)."""

    approval_id: str
    approve: bool
    reason: str | None


@dataclass(frozen=True, slots=True)
class Reconfigure(ChannelAction):
    """The conversation settings changed (voice, instructions, tools, output)."""

    settings: ConversationSettings


class ConversationProtocol(RealtimeProtocol):
    """A Realtime conversation, without I/O."""

    def __init__(
        self,
        settings: ConversationSettings,
        resolve_model: Callable[[str], str],
        live_defaults: LiveConfig,
    ) -> None:
        super().__init__(settings.hearing, "ga", resolve_model, live_defaults)
        self.conversation = settings
        self._responding: str | None = None
        self._last_transcript = ""

    @property
    def responding(self) -> bool:
        """Whether a response is in flight."""
        return self._responding is not None

    def opened(self) -> list[Action]:
        return [Send(wire.session("created", self.conversation))]

    def live_config(self) -> LiveConfig:
        config = super().live_config()
        if config.vad is None:
            return config
        after_ms = min(PREPARE_FINAL_PAUSE_MS, config.vad.silence_duration_ms // 2)
        return replace(config, prepare_final_after_ms=after_ms)

    # --- client events ---

    def _conversation_update(self, message: dict[str, Any], event_id: str | None) -> list[Action]:
        updated = self.conversation.updated(message.get("session"), event_id)
        if updated.hearing.raw_format != self.settings.raw_format:
            self._raw = RawAudioReader(updated.hearing.raw_format)
        self.settings = updated.hearing
        self.conversation = updated
        return [
            Configure(self.model_id, self.live_config(), self.transcribe_options()),
            Reconfigure(self.conversation),
            Send(wire.session("updated", self.conversation)),
        ]

    def _item_create(self, message: dict[str, Any], event_id: str | None) -> list[Action]:
        item = message.get("item")
        if not isinstance(item, dict):
            raise InvalidEvent("invalid_type", "item must be an object", event_id, "item")
        kind = item.get("type")
        if kind == "message" and item.get("role", "user") == "user":
            text = "".join(
                str(part.get("text") or part.get("transcript") or "")
                for part in item.get("content") or ()
                if isinstance(part, dict)
            )
            if not text.strip():
                raise InvalidEvent("invalid_value", "a user message needs text", event_id, "item.content")
            stored = user_message(text)
            shown = {**stored.data, "object": "realtime.item", "status": "completed"}
            return [Remember([stored]), *[Send(m) for m in wire.output_item("added", "", shown)[1:]]]
        if kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str) or not isinstance(output, str):
                raise InvalidEvent(
                    "invalid_value", "a function_call_output needs call_id and output", event_id, "item"
                )
            stored = function_call_output(call_id, output)
            shown = {**stored.data, "object": "realtime.item", "status": "completed"}
            return [
                Remember([stored], answered_call=True),
                *[Send(m) for m in wire.output_item("added", "", shown)[1:]],
            ]
        if kind == "mcp_approval_response":
            approval_id, approve = item.get("approval_request_id"), item.get("approve")
            if not isinstance(approval_id, str) or not isinstance(approve, bool):
                raise InvalidEvent(
                    "invalid_value",
                    "an mcp_approval_response needs approval_request_id and approve",
                    event_id,
                    "item",
                )
            reason = item.get("reason")
            return [DecideApproval(approval_id, approve, reason if isinstance(reason, str) else None)]
        raise InvalidEvent(
            "invalid_value",
            "conversation.item.create takes a user message, function_call_output or mcp_approval_response",
            event_id,
            "item.type",
        )

    def _response_create(self, message: dict[str, Any], event_id: str | None) -> list[Action]:
        if self.responding:
            return [self._busy(event_id)]
        return [Respond([])]

    def _response_cancel(self, message: dict[str, Any], event_id: str | None) -> list[Action]:
        if not self.responding:
            return [
                InvalidEvent("response_cancel_not_active", "there is no response to cancel", event_id).send()
            ]
        return [CancelResponse()]

    def _truncate(self, message: dict[str, Any], event_id: str | None) -> list[Action]:
        item_id, audio_end_ms = message.get("item_id"), message.get("audio_end_ms")
        if not isinstance(item_id, str):
            raise InvalidEvent("invalid_type", "item_id must be a string", event_id, "item_id")
        if not isinstance(audio_end_ms, int) or audio_end_ms < 0:
            raise InvalidEvent(
                "invalid_value", "audio_end_ms must be a whole number ≥ 0", event_id, "audio_end_ms"
            )
        truncated = events.server_event(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": message.get("content_index", 0),
                "audio_end_ms": audio_end_ms,
            }
        )
        return [Truncate(item_id, audio_end_ms), Send(truncated)]

    def _busy(self, event_id: str | None) -> Send:
        message = "a response is in flight: cancel it or wait for its response.done"
        return InvalidEvent("conversation_already_has_active_response", message, event_id).send()

    _HANDLERS: dict[str, Callable[[Any, dict[str, Any], str | None], list[Action]]] = {  # type: ignore[assignment]
        **RealtimeProtocol._HANDLERS,
        "session.update": _conversation_update,
        "conversation.item.create": _item_create,
        "response.create": _response_create,
        "response.cancel": _response_cancel,
        "conversation.item.truncate": _truncate,
    }
    del _HANDLERS["transcription_session.update"]

    # --- session events (hearing) ---

    def on_event(self, event: SessionEvent) -> list[Action]:
        actions = super().on_event(event)
        if isinstance(event, SpeechStarted) and self.responding and self.conversation.interrupt_response:
            # Barge-in: the response stops before anything else is sent.
            return [CancelResponse(), *actions]
        if isinstance(event, UtteranceEnd):
            transcript = self._last_transcript
            if transcript and self.conversation.create_response and not self.responding:
                actions.append(Respond([user_message(transcript)]))
            elif transcript:
                actions.append(Remember([user_message(transcript)]))
        return actions

    def _completed(self, end: UtteranceEnd) -> list[Action]:
        self._last_transcript = self._items[0].transcript.strip() if self._items else ""
        return super()._completed(end)

    # --- the voice turn loop's events ---

    def on_voice(self, event: VoiceEvent) -> list[Action]:
        """Response events for one event of the voice turn loop."""
        with_audio = not self.conversation.text_only
        if isinstance(event, ResponseStarted):
            self._responding = event.response_id
            return [Send(wire.response_created(event.response_id, self.conversation.output_modalities))]
        if isinstance(event, AnswerStarted):
            item = wire.assistant_item(event.item_id, "in_progress", None, with_audio)
            return [Send(m) for m in wire.output_item("added", event.response_id, item)]
        if isinstance(event, AnswerText):
            return [Send(wire.transcript_delta(event.response_id, event.item_id, event.delta, with_audio))]
        if isinstance(event, AnswerAudio):
            audio = base64.b64encode(event.pcm16).decode("ascii")
            return [Send(wire.audio_delta(event.response_id, event.item_id, audio))]
        if isinstance(event, AnswerDone):
            item_id = event.item["id"]
            item = wire.assistant_item(item_id, "completed", event.text, with_audio)
            done = wire.answer_done(event.response_id, item_id, event.text, with_audio)
            return [Send(m) for m in [*done, *wire.output_item("done", event.response_id, item)]]
        if isinstance(event, CallOut):
            item = {**event.item, "object": "realtime.item", "status": "completed"}
            sent = [
                *wire.output_item("added", event.response_id, item),
                *wire.function_call_arguments(event.response_id, event.item),
                *wire.output_item("done", event.response_id, item),
            ]
            return [Send(m) for m in sent]
        if isinstance(event, ApprovalOut):
            item = {**event.item, "object": "realtime.item"}
            sent = [
                *wire.output_item("added", event.response_id, item),
                *wire.output_item("done", event.response_id, item),
            ]
            return [Send(m) for m in sent]
        if isinstance(event, ResponseFinished):
            self._responding = None
            output = [_shown(item, with_audio) for item in event.output]
            return [
                Send(wire.response_done(event.response_id, event.status, output, event.usage, event.error))
            ]
        if isinstance(event, TurnRefused):
            return [Send(events.error("invalid_request_error", event.code, event.message, None))]
        return []


def _shown(item: dict[str, Any], with_audio: bool) -> dict[str, Any]:
    """A stored item as response.done's output shows it (assistant text as the audio's transcript)."""
    if item.get("type") == "message" and item.get("role") == "assistant":
        text = "".join(part.get("text", "") for part in item.get("content", ()))
        return wire.assistant_item(item["id"], "completed", text, with_audio)
    return {**item, "object": "realtime.item"}
