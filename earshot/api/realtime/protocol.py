"""The OpenAI Realtime transcription conversation, sans-I/O: `RealtimeProtocol`, beta and GA dialects.

It is fed client messages and session events and returns actions; `endpoint.py` runs it in the shared live
socket shell.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from earshot.api.live.actions import (
    TRY_AGAIN_LATER_CLOSE,
    Action,
    AppendAudio,
    Clear,
    CloseSocket,
    Commit,
    Configure,
    EndReason,
    ModelRefused,
    Send,
)
from earshot.api.realtime import server_events as events
from earshot.api.realtime.client_events import (
    InvalidEvent,
    appended_audio,
    binary_not_supported,
    model_param,
    parse_event,
    unknown_event,
    update_dialect,
    updated_settings,
)
from earshot.api.realtime.endings import ending_actions, realtime_limits
from earshot.api.realtime.session import Dialect, RealtimeSettings
from earshot.audio.raw import RawAudioReader
from earshot.engines.base import TranscribeOptions
from earshot.streaming.events import Error, Final, SessionEvent, SpeechStarted, SpeechStopped, UtteranceEnd
from earshot.streaming.live_config import LiveConfig

MIN_COMMIT_MS = 100


@dataclass(slots=True)
class _Item:
    """A user audio item: announced at speech start (or commit), completed when its turn's text is in."""

    id: str
    start_ms: int
    end_ms: int | None = None
    transcript: str = ""
    committed: bool = False


class RealtimeProtocol:
    """The Realtime transcription conversation, without I/O."""

    def __init__(
        self,
        settings: RealtimeSettings,
        dialect: Dialect,
        resolve_model: Callable[[str], str],
        live_defaults: LiveConfig,
    ) -> None:
        self.settings = settings
        self.model_id = resolve_model(settings.model)
        self.dialect = dialect
        self._resolve_model = resolve_model
        self._live_defaults = realtime_limits(live_defaults)
        self._items: deque[_Item] = deque()
        self._open: _Item | None = None
        self._previous_item_id: str | None = None
        self._raw = RawAudioReader(settings.raw_format)
        self._buffered_ms = 0.0
        self._appended_ms = 0.0

    @property
    def appended_ms(self) -> float:
        """Milliseconds of audio the client has appended (whole sample frames)."""
        return self._appended_ms

    # --- client messages ---

    def opened(self) -> list[Action]:
        """`session.created` (GA) or `transcription_session.created` (beta)."""
        return [Send(events.session(self.dialect, "created", self.settings))]

    def receive_bytes(self, data: bytes) -> list[Action]:
        """Binary frames aren't part of this protocol."""
        return [binary_not_supported()]

    def receive_text(self, text: str) -> list[Action]:
        """Actions for one client event."""
        try:
            message, event_id = parse_event(text)
            kind = message.get("type")
            handler = self._HANDLERS.get(kind) if isinstance(kind, str) else None
            if handler is None:
                raise unknown_event(kind, event_id)
            return handler(self, message, event_id)
        except InvalidEvent as e:
            return [e.send()]

    def _append(self, message: dict[str, Any], event_id: str | None) -> list[Action]:
        _, raw = appended_audio(message, event_id)
        ms_before = self._raw.ms_read
        pcm16 = self._raw.read(raw)
        if not pcm16:
            return []
        added_ms = self._raw.ms_read - ms_before
        self._buffered_ms += added_ms
        self._appended_ms += added_ms
        if self._open is None and self.settings.vad is None:
            self._open = _Item(events.new_item_id(), int(self._appended_ms - added_ms))
            self._items.append(self._open)
        return [AppendAudio(pcm16)]

    def _commit(self, message: dict[str, Any], event_id: str | None) -> list[Action]:
        if self._buffered_ms < MIN_COMMIT_MS:
            too_small = (
                f"buffer too small: expected at least {MIN_COMMIT_MS}ms of audio, "
                f"but buffer only has {self._buffered_ms:.2f}ms of audio"
            )
            return [InvalidEvent("input_audio_buffer_commit_empty", too_small, event_id).send()]
        item = self._open
        if item is None:
            item = _Item(events.new_item_id(), int(self._appended_ms - self._buffered_ms))
            self._items.append(item)
        item.end_ms = int(self._appended_ms)
        return [Commit(), *self._committed(item)]

    def _clear(self, message: dict[str, Any], event_id: str | None) -> list[Action]:
        if self._open is not None:
            self._items.remove(self._open)
            self._open = None
        self._buffered_ms = 0.0
        return [Clear(), Send(events.cleared())]

    def _update(self, message: dict[str, Any], event_id: str | None) -> list[Action]:
        self.dialect, session = update_dialect(message["type"], message.get("session"), event_id)
        updated = updated_settings(self.settings, self.dialect, session, event_id)
        if updated.model != self.settings.model:
            try:
                self.model_id = self._resolve_model(updated.model)
            except ModelRefused as e:
                raise InvalidEvent(e.code, e.message, event_id, model_param(self.dialect)) from e
        # Audio already buffered was heard under the old format and turn detection: it ends its turn first.
        hearing_changed = (updated.input_rate_hz, updated.vad) != (
            self.settings.input_rate_hz,
            self.settings.vad,
        )
        actions: list[Action] = []
        if hearing_changed and self._open is not None:
            if self._buffered_ms >= MIN_COMMIT_MS:
                actions.extend(self._commit(message, event_id))
            else:
                actions.extend(self._clear(message, event_id)[:1])
        if updated.raw_format != self.settings.raw_format:
            self._raw = RawAudioReader(updated.raw_format)
        self.settings = updated
        actions.append(Configure(self.model_id, self.live_config(), self.transcribe_options()))
        actions.append(Send(events.session(self.dialect, "updated", self.settings)))
        return actions

    _HANDLERS: dict[str, Callable[[RealtimeProtocol, dict[str, Any], str | None], list[Action]]] = {
        "input_audio_buffer.append": _append,
        "input_audio_buffer.commit": _commit,
        "input_audio_buffer.clear": _clear,
        "transcription_session.update": _update,
        "session.update": _update,
    }

    def live_config(self) -> LiveConfig:
        """The LiveSession configuration these settings ask for."""
        return replace(self._live_defaults, input_rate_hz=self.settings.input_rate_hz, vad=self.settings.vad)

    def transcribe_options(self) -> TranscribeOptions:
        """Language and prompt for the engine."""
        # Deltas are append-only, so revisable Partials are of no use here.
        return TranscribeOptions(
            language=self.settings.language, prompt=self.settings.prompt, interim_results=False
        )

    # --- session events ---

    def on_event(self, event: SessionEvent) -> list[Action]:
        """Server events for one session event."""
        if isinstance(event, SpeechStarted):
            start_ms = round(event.t * 1000)
            self._open = _Item(events.new_item_id(), start_ms)
            self._items.append(self._open)
            return [Send(events.speech_started(self._open.id, start_ms))]
        if isinstance(event, SpeechStopped):
            item = self._open
            if item is None:
                return []
            item.end_ms = round(event.t * 1000)
            return [Send(events.speech_stopped(item.id, item.end_ms)), *self._committed(item)]
        item = self._items[0] if self._items else None
        if item is None:
            return []
        if isinstance(event, Final) and event.text:
            delta = f" {event.text}" if item.transcript else event.text
            item.transcript += delta
            return [Send(events.delta(item.id, delta))]
        if isinstance(event, UtteranceEnd):
            return self._completed(event)
        if isinstance(event, Error):
            return self._failed(event)
        return []

    def _committed(self, item: _Item) -> list[Action]:
        item.committed = True
        if item is self._open:
            self._open = None
        self._buffered_ms = 0.0
        previous, self._previous_item_id = self._previous_item_id, item.id
        return [Send(message) for message in events.committed(self.dialect, item.id, previous)]

    def _completed(self, end: UtteranceEnd) -> list[Action]:
        item = self._items[0]
        # A turn the server flushed itself (the session is ending) was never committed: commit it first.
        actions = [] if item.committed else self._committed(item)
        if item.end_ms is None:
            item.end_ms = max(item.start_ms, round(end.t * 1000))
        self._items.popleft()
        seconds = max(0, item.end_ms - item.start_ms) / 1000
        return [*actions, Send(events.completed(item.id, item.transcript, seconds))]

    def _failed(self, error: Error) -> list[Action]:
        # The session dropped every turn it had pending: each of their items fails.
        failed: list[Action] = [
            Send(events.failed(item.id, error.code, error.message)) for item in self._items
        ]
        self._items.clear()
        self._open = None
        return failed

    def ending(self, reason: EndReason, message: str) -> list[Action]:
        """An `error` event saying why the server ends the session, then the close."""
        return ending_actions(reason, message)

    @classmethod
    def refusal(cls, dialect: Dialect, code: str, message: str) -> list[Action]:
        """The error event and close for a connection refused before its session starts."""
        kind = "invalid_request_error"
        close_code = 1008
        if code == "insufficient_quota":
            kind = "insufficient_quota"
        elif code in ("rate_limit_exceeded", "concurrency_limit_exceeded"):
            kind = "rate_limit_error"
        elif code in ("server_busy", "server_shutting_down"):
            kind, close_code = "server_error", TRY_AGAIN_LATER_CLOSE
        return [Send(events.error(kind, code, message, None)), CloseSocket(close_code, code)]
