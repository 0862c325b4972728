"""earshot's own live protocol after `auth`, sans-I/O: `ManagedProtocol`.

It takes binary PCM16 frames and the client's controls, and sends `transcript`, `utterance_end`,
`credits_low` and `session_end`; `endpoint.py` reads the `auth` message and runs it in the live socket shell.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace

from earshot.api.live.actions import (
    TRY_AGAIN_LATER_CLOSE,
    Action,
    AppendAudio,
    CloseSocket,
    Commit,
    EndReason,
    EndStream,
    Send,
)
from earshot.api.managed import wire
from earshot.audio.raw import RawAudioReader, RawFormat
from earshot.audio.vad import VadParams
from earshot.engines.base import TranscribeOptions
from earshot.streaming.events import Error, Final, Partial, SessionEvent, UtteranceEnd
from earshot.streaming.live_config import LiveConfig

log = logging.getLogger(__name__)

POLICY_CLOSE = 1008
BAD_REQUEST_CLOSE = 4400
# The accounts layer's refusal codes (and the model chooser's) as managed error codes.
_ERROR_OF_REFUSAL: dict[str, wire.ErrorCode] = {
    "invalid_api_key": "AUTH_FAILED",
    "model_not_allowed": "MODEL_NOT_ALLOWED",
    "insufficient_quota": "INSUFFICIENT_CREDITS",
    "rate_limit_exceeded": "RATE_LIMITED",
    "concurrency_limit_exceeded": "RATE_LIMITED",
    "server_busy": "SERVER_BUSY",
    "server_shutting_down": "SERVER_SHUTDOWN",
}
# Why the server ends a session: the error code (None: no error, just the goodbye) and the close code.
_END: dict[EndReason, tuple[wire.ErrorCode | None, int]] = {
    "client_closed": (None, 1000),
    "finished": (None, 1000),
    "idle_timeout": ("IDLE_TIMEOUT", 1000),
    "max_duration": ("SESSION_EXPIRED", 1000),
    "revoked": ("AUTH_FAILED", POLICY_CLOSE),
    "insufficient_credits": ("INSUFFICIENT_CREDITS", POLICY_CLOSE),
    "shutdown": ("SERVER_SHUTDOWN", 1012),
    "error": ("UPSTREAM_ERROR", 1011),
    "bad_audio": ("BAD_REQUEST", 1007),
}


class ManagedProtocol:
    """The managed transcription conversation after `auth`, without I/O."""

    def __init__(self, config: wire.StreamConfig, model_id: str, live_defaults: LiveConfig) -> None:
        self.config = config
        self.model_id = model_id
        self.session_id = f"sess_{uuid.uuid4().hex[:22]}"
        self._live_defaults = live_defaults
        self._raw = RawAudioReader(RawFormat(rate_hz=config.sample_rate, channels=config.channels))
        self._unflushed = False

    @property
    def seconds_used(self) -> float:
        """Seconds of audio the client has sent (whole sample frames)."""
        return self._raw.ms_read / 1000

    def live_config(self) -> LiveConfig:
        """Server VAD at the client's sample rate, with the server's limits."""
        return replace(self._live_defaults, input_rate_hz=self.config.sample_rate, vad=VadParams())

    def transcribe_options(self) -> TranscribeOptions:
        """Language and interim results as the client asked."""
        return TranscribeOptions(language=self.config.language, interim_results=self.config.interim_results)

    def opened(self) -> list[Action]:
        """`ready`: the client may start sending audio."""
        return [Send(wire.ready(self.session_id, self.model_id))]

    def receive_bytes(self, data: bytes) -> list[Action]:
        """Audio: PCM16 little-endian, interleaved when there are several channels (mixed down to mono)."""
        pcm16 = self._raw.read(data)
        if not pcm16:
            return []
        self._unflushed = True
        return [AppendAudio(pcm16)]

    def receive_text(self, text: str) -> list[Action]:
        """Controls: `keepalive`, `finalize` (flush into finals, stay open), `close` (flush, then end)."""
        try:
            message = wire.parse_object(text)
        except wire.WireError as e:
            return [Send(wire.error(e.code, e.message))]
        kind = message.get("type")
        if kind == "keepalive":
            return []
        if kind == "finalize":
            flush, self._unflushed = self._unflushed, False
            return [Commit()] if flush else []
        if kind == "close":
            return [EndStream()]
        if kind == "auth":
            return [Send(wire.error("BAD_REQUEST", "this session is already authenticated"))]
        shown = kind if isinstance(kind, str) else repr(kind)
        return [
            Send(
                wire.error("BAD_REQUEST", f"unknown message type {shown}; send keepalive, finalize or close")
            )
        ]

    def on_event(self, event: SessionEvent) -> list[Action]:
        """Server events for one session event."""
        if isinstance(event, Final) and event.text:
            return [Send(wire.transcript(event.text, True, event.start, event.end))]
        if isinstance(event, Partial) and self.config.interim_results:
            return [Send(wire.transcript(event.text, False, event.start, event.end))]
        if isinstance(event, UtteranceEnd):
            return [Send(wire.utterance_end(event.t))]
        if isinstance(event, Error):
            message = "transcription failed for the current utterance; the session goes on"
            return [Send(wire.error("UPSTREAM_ERROR", message))]
        return []

    def credits_low(self, seconds_remaining: float) -> list[Action]:
        """`credits_low`, sent once per session."""
        return [Send(wire.credits_low(seconds_remaining))]

    def ending(self, reason: EndReason, message: str) -> list[Action]:
        """Why the server ends the session (unless the client asked), `session_end`, and the close."""
        code, close_code = _END[reason]
        actions: list[Action] = [] if code is None else [Send(wire.error(code, message))]
        if reason != "client_closed":
            actions.append(Send(wire.session_end(self.seconds_used)))
        return [*actions, CloseSocket(close_code)]

    @staticmethod
    def refusal(code: str, message: str) -> list[Action]:
        """The error and close for a session refused before `ready`."""
        managed = _ERROR_OF_REFUSAL.get(code, "BAD_REQUEST")
        return [Send(wire.error(managed, message)), CloseSocket(_close_of(managed))]

    @staticmethod
    def refused(error: wire.WireError) -> list[Action]:
        """The error and close for a first message that can't open a session."""
        return [Send(wire.error(error.code, error.message)), CloseSocket(_close_of(error.code))]


def _close_of(code: wire.ErrorCode) -> int:
    if code in ("SERVER_BUSY", "SERVER_SHUTDOWN"):
        return TRY_AGAIN_LATER_CLOSE
    return BAD_REQUEST_CLOSE if code == "BAD_REQUEST" else POLICY_CLOSE
