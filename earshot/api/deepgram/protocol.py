"""Deepgram's live protocol, sans-I/O: `DeepgramLiveProtocol` is fed the client's frames and the session's
events and returns actions; `live.py` runs it in the shared live socket shell.

Finals come as Deepgram sends them: the session's Finals are held as one stretch until it ends (a phrase cut
at a pause, the end of a turn, a Finalize, or MAX_STRETCH_S of words), and the whole stretch is one
`is_final` Result; interim Results show the stretch so far and the tentative words after it. So a final is
never a lone word that the engine happened to settle early, and `speech_final` rides on the last final of an
utterance, as it does from Deepgram: a stretch a phrase cut ended is sent when the next words come (the turn
goes on) or with the turn's end (it ends the utterance).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from earshot.api.deepgram import results as messages
from earshot.api.deepgram.params import DeepgramError, ListenParams
from earshot.api.deepgram.results import ModelInfo, spread_words
from earshot.api.json_messages import BadJSON, load_message
from earshot.api.live.actions import (
    TRY_AGAIN_LATER_CLOSE,
    Action,
    AppendAudio,
    AppendEncoded,
    CloseSocket,
    Commit,
    EndReason,
    EndStream,
    RefuseHandshake,
    Send,
)
from earshot.audio.raw import RawAudioReader
from earshot.engines.base import TranscribeOptions
from earshot.streaming.events import (
    Error,
    Final,
    Partial,
    PhraseEnd,
    SessionEvent,
    SpeechStarted,
    SpeechStopped,
    UtteranceEnd,
    Word,
)
from earshot.streaming.live_config import LiveConfig

# How the server ends a stream: close code and reason (Deepgram's NET-0001 / DATA-0000 where it has one).
_CLOSE_OF_END: dict[EndReason, tuple[int, str]] = {
    "idle_timeout": (1011, "NET-0001"),
    "max_duration": (1000, "SESSION_EXPIRED"),
    "revoked": (1008, "INVALID_AUTH"),
    "insufficient_credits": (1008, "INSUFFICIENT_CREDITS"),
    "shutdown": (1012, "SERVER_SHUTTING_DOWN"),
    "error": (1011, "INTERNAL_SERVER_ERROR"),
    "bad_audio": (1008, "DATA-0000"),
}
_IDLE_MESSAGE = "did not receive audio data or a text message within the timeout window"
# A stretch of final words is sent once it spans this long, even before a pause ends it.
MAX_STRETCH_S = 10.0


@dataclass(slots=True)
class _TurnEnd:
    """A turn that has ended and whose text is still coming: why it ended, and what was sent for it."""

    endpoint: bool = False  # the VAD heard the pause (speech_final)
    finalize: bool = False  # a Finalize ended it, or arrived while its text was pending (from_finalize)
    finals: int = 0


@dataclass(slots=True)
class _Stretch:
    """Final words not sent yet: the stretch of speech they belong to has not ended."""

    words: list[Word] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0
    opens_utterance: bool = True  # the first stretch since the last utterance ended
    # A phrase cut ended it. It is still held: the cut comes at a shorter pause than the turn's end, so the
    # next words or the turn's end decide whether it ends its utterance.
    complete: bool = False

    def add(self, event: Final) -> None:
        words = event.words or spread_words(event.text, event.start, event.end)
        if not words:
            return
        if not self.words:
            self.start = event.start
        self.words.extend(words)
        self.end = max(self.end, event.end)

    @property
    def span_s(self) -> float:
        return self.end - self.start if self.words else 0.0


class DeepgramLiveProtocol:
    """A Deepgram live stream, without I/O."""

    def __init__(
        self, params: ListenParams, model: ModelInfo, live_defaults: LiveConfig, request_id: str
    ) -> None:
        self.params = params
        self.model = model
        self.request_id = request_id
        self._live_defaults = live_defaults
        self._sha256 = hashlib.sha256()
        raw_format = params.raw_format
        self._raw = RawAudioReader(raw_format) if raw_format is not None else None
        self._in_turn = False
        self._ends: deque[_TurnEnd] = deque()
        self._stretch = _Stretch()
        self._clock_s = 0.0
        self._closing = False

    # --- client messages ---

    def live_config(self) -> LiveConfig:
        """The LiveSession configuration the query parameters ask for."""
        return replace(self._live_defaults, input_rate_hz=self.params.input_rate_hz, vad=self.params.vad)

    def transcribe_options(self) -> TranscribeOptions:
        """Language, key terms as a prompt, and whether interim results are wanted."""
        return TranscribeOptions(
            language=self.params.language,
            prompt=self.params.prompt,
            interim_results=self.params.interim_results,
        )

    def opened(self) -> list[Action]:
        """Deepgram says nothing until there are results."""
        return []

    def receive_bytes(self, data: bytes) -> list[Action]:
        """Audio; an empty frame means the client has no more (Deepgram's older way to close)."""
        if self._closing:
            return []
        if not data:
            return self._close_stream()
        self._sha256.update(data)
        if self._raw is None:
            return [AppendEncoded(data)]
        pcm16 = self._raw.read(data)
        return [AppendAudio(pcm16)] if pcm16 else []

    def receive_text(self, text: str) -> list[Action]:
        """KeepAlive, Finalize or CloseStream; anything else gets an Error message and the stream goes on."""
        try:
            message = load_message(text)
        except BadJSON as e:
            return [Send(messages.error("SchemaError", str(e)))]
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "KeepAlive":
            return []
        if kind == "Finalize":
            return self._finalize()
        if kind == "CloseStream":
            return self._close_stream()
        shown = kind if isinstance(kind, str) else "missing"
        return [
            Send(
                messages.error(
                    "SchemaError",
                    f"unknown message type {shown[:40]!r}: send KeepAlive, Finalize or CloseStream as text, "
                    "and audio as binary frames",
                )
            )
        ]

    def _finalize(self) -> list[Action]:
        # Whether a turn is open is judged by the events delivered so far. If a SpeechStopped is still on
        # its way, the commit ends a second, empty turn, and the turn the VAD ended takes the finalize mark
        # (its text is from_finalize, without speech_final).
        if self._closing:
            return []
        if self._in_turn:
            self._in_turn = False
            self._ends.append(_TurnEnd(finalize=True))
            return [Commit()]
        if self._ends:
            # Nothing is being heard; the text still pending is what this Finalize flushes.
            self._ends[-1].finalize = True
            return []
        return [Send(self._results((), self._clock_s, self._clock_s, from_finalize=True))]

    def _close_stream(self) -> list[Action]:
        if self._closing:
            return []
        self._closing = True
        return [EndStream()]

    # --- session events ---

    def on_event(self, event: SessionEvent) -> list[Action]:
        """Deepgram messages for one session event."""
        if isinstance(event, SpeechStarted):
            self._in_turn = True
            self._clock_s = max(self._clock_s, event.t)
            return [Send(messages.speech_started(event.t))] if self.params.vad_events else []
        if isinstance(event, SpeechStopped):
            self._clock_s = max(self._clock_s, event.t)
            if self._in_turn:
                self._in_turn = False
                self._ends.append(_TurnEnd(endpoint=self.params.endpointing is not None))
            return []
        if isinstance(event, Partial):
            self._clock_s = max(self._clock_s, event.end)
            if not event.text:
                return []
            actions = self._send_stretch() if self._stretch.complete else []
            if self.params.interim_results:
                actions.append(Send(self._interim(event)))
            return actions
        if isinstance(event, Final):
            self._clock_s = max(self._clock_s, event.end)
            actions = self._send_stretch() if self._stretch.complete and event.text.strip() else []
            self._stretch.add(event)
            if self._stretch.span_s >= MAX_STRETCH_S:
                actions += self._send_stretch()
            return actions
        if isinstance(event, PhraseEnd):
            self._clock_s = max(self._clock_s, event.t)
            self._stretch.complete = bool(self._stretch.words)
            return []
        if isinstance(event, UtteranceEnd):
            return self._utterance_end(event)
        if isinstance(event, Error):
            # The engine failed: the turns it had pending are gone, and the stream goes on with a new one.
            self._ends.clear()
            self._in_turn = False
            self._stretch = _Stretch()
            return [Send(messages.error(event.code, event.message))]
        return []

    def _interim(self, event: Partial) -> str:
        """The stretch so far and the tentative words after it."""
        held = self._stretch.words
        tentative = spread_words(event.text, max(event.start, self._stretch.end if held else 0.0), event.end)
        start = self._stretch.start if held else event.start
        return self._results(
            (*held, *tentative),
            start,
            event.end,
            is_final=False,
            opening=self._stretch.opens_utterance,
            closing=False,
        )

    def _send_stretch(self, *, ends_utterance: bool = False, speech_final: bool = False) -> list[Action]:
        """The held words as one final (none when nothing is held)."""
        stretch = self._stretch
        opens_next = ends_utterance or (stretch.opens_utterance and not stretch.words)
        self._stretch = _Stretch(opens_utterance=opens_next)
        if not stretch.words:
            return []
        pending = self._ends[0] if self._ends else None
        if pending is not None:
            pending.finals += 1
        from_finalize = pending is not None and pending.finalize
        return [
            Send(
                self._results(
                    stretch.words,
                    stretch.start,
                    stretch.end,
                    speech_final=speech_final,
                    from_finalize=from_finalize,
                    opening=stretch.opens_utterance,
                    closing=ends_utterance,
                )
            )
        ]

    def _utterance_end(self, event: UtteranceEnd) -> list[Action]:
        # A turn flushed because the stream is ending was never registered: it is neither kind.
        ended = self._ends[0] if self._ends else _TurnEnd()
        self._clock_s = max(self._clock_s, event.t)
        # The utterance's last stretch ends it: speech_final when the VAD heard its pause.
        actions = self._send_stretch(ends_utterance=True, speech_final=ended.endpoint)
        if self._ends:
            self._ends.popleft()
        if ended.finalize and not ended.finals:
            actions.append(Send(self._results((), event.t, event.t, from_finalize=True)))
        if ended.endpoint:
            if not actions:
                # Nothing was said since the last final: the utterance's end is an empty final.
                actions.append(Send(self._results((), event.t, event.t, speech_final=True)))
            if self.params.utterance_end_ms is not None:
                actions.append(Send(messages.utterance_end(event.t)))
        return actions

    def _results(
        self,
        words: Sequence[Word],
        start: float,
        end: float,
        *,
        is_final: bool = True,
        speech_final: bool = False,
        from_finalize: bool = False,
        opening: bool = True,
        closing: bool = True,
    ) -> str:
        return messages.results(
            words,
            start,
            end,
            is_final=is_final,
            speech_final=speech_final,
            from_finalize=from_finalize,
            punctuate=self.params.punctuated,
            diarize=self.params.diarize,
            request_id=self.request_id,
            model=self.model,
            opening=opening,
            closing=closing,
        )

    # --- the end ---

    @property
    def duration_s(self) -> float:
        """Seconds of audio received (for containers, as far as the results reached)."""
        if self._raw is None:
            return self._clock_s
        return self._raw.ms_read / 1000

    def ending(self, reason: EndReason, message: str) -> list[Action]:
        """Metadata and the close; when the server ends the stream, an Error message saying why first."""
        if reason == "client_closed":
            return [CloseSocket(1000)]
        metadata = Send(
            messages.metadata(
                self.request_id, self._sha256.hexdigest(), self.duration_s, self.params.channels, self.model
            )
        )
        if reason == "finished":
            return [metadata, CloseSocket(1000)]
        code, close_reason = _CLOSE_OF_END.get(reason, (1011, "INTERNAL_SERVER_ERROR"))
        description = _IDLE_MESSAGE if reason == "idle_timeout" else message
        return [Send(messages.error(close_reason, description)), metadata, CloseSocket(code, close_reason)]

    @classmethod
    def refusal(cls, error: DeepgramError, request_id: str) -> list[Action]:
        """An HTTP refusal at the handshake; where the server can't send one, an Error message and 1008."""
        return [
            RefuseHandshake(error.status, error.body(request_id), headers=tuple(error.headers.items())),
            Send(messages.error(error.err_code, error.err_msg)),
            CloseSocket(TRY_AGAIN_LATER_CLOSE if error.headers.get("Retry-After") else 1008, error.err_code),
        ]
