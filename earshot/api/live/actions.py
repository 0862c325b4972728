"""What a live protocol asks its socket shell to do, and how a live session ends.

A live protocol class is fed client messages and session events and answers with these actions; the
shell (`api/live_socket.py`) carries them out. Nothing here touches a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from earshot.engines.base import TranscribeOptions
from earshot.store.records import Outcome
from earshot.streaming.events import SessionEvent
from earshot.streaming.live_config import LiveConfig


@dataclass(frozen=True, slots=True)
class Send:
    """Send one text (JSON) or binary message to the client."""

    message: str | bytes


@dataclass(frozen=True, slots=True)
class AppendAudio:
    """Feed PCM16 mono audio at the session's input rate."""

    pcm16: bytes


@dataclass(frozen=True, slots=True)
class AppendEncoded:
    """Feed container bytes (webm, ogg ...); the shell decodes them to PCM16 at 16 kHz off the event loop.

    A session fed this way must be configured with a 16 kHz input rate.
    """

    data: bytes


@dataclass(frozen=True, slots=True)
class Commit:
    """End the current turn now."""


@dataclass(frozen=True, slots=True)
class Clear:
    """Drop the audio not yet committed."""


@dataclass(frozen=True, slots=True)
class Configure:
    """Apply new session settings; `model` is the canonical model id it was checked against."""

    model: str
    config: LiveConfig
    options: TranscribeOptions


@dataclass(frozen=True, slots=True)
class EndStream:
    """The client has no more audio: flush the open turn, deliver its text, then end with `finished`."""


@dataclass(frozen=True, slots=True)
class RefuseHandshake:
    """Refuse the connection with an HTTP response instead of accepting it (where the server can)."""

    status: int
    body: str
    media_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class CloseSocket:
    """Close the connection with a WebSocket close code."""

    code: int
    reason: str = ""


class ChannelAction:
    """An action only the protocol's own socket (a `LiveSocket` subclass) carries out, such as starting a
    voice agent's response; the plain shell has none."""


class ModelRefused(Exception):
    """The requested model can't serve this live session; `code` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Action = (
    Send
    | AppendAudio
    | AppendEncoded
    | Commit
    | Clear
    | Configure
    | EndStream
    | RefuseHandshake
    | CloseSocket
    | ChannelAction
)

EndReason = Literal[
    "client_closed",
    "finished",
    "idle_timeout",
    "max_duration",
    "revoked",
    "insufficient_credits",
    "shutdown",
    "error",
    "bad_audio",
]

# The WebSocket close code for "the server is full or going away; try again later" (RFC 6455 registry).
TRY_AGAIN_LATER_CLOSE = 1013

OUTCOME_OF_END: dict[EndReason, Outcome] = {
    "client_closed": "client_closed",
    "finished": "ok",
    "idle_timeout": "timeout",
    "max_duration": "max_duration",
    "revoked": "revoked",
    "insufficient_credits": "insufficient_credits",
    "shutdown": "shutdown",
    "error": "error",
    # Audio the client sent could not be decoded: its fault, billed for what was heard, like a client leaving.
    "bad_audio": "client_closed",
}


class LiveProtocol(Protocol):
    """A live wire protocol as a sans-I/O class."""

    def live_config(self) -> LiveConfig:
        """The LiveSession configuration the client's settings ask for."""
        ...

    def transcribe_options(self) -> TranscribeOptions:
        """Language and prompt for the engine."""
        ...

    def opened(self) -> list[Action]:
        """What to send once the connection is accepted."""
        ...

    def receive_text(self, text: str) -> list[Action]:
        """Actions for one text message from the client."""
        ...

    def receive_bytes(self, data: bytes) -> list[Action]:
        """Actions for one binary message from the client."""
        ...

    def on_event(self, event: SessionEvent) -> list[Action]:
        """Messages for one session event."""
        ...

    def ending(self, reason: EndReason, message: str) -> list[Action]:
        """The last messages and the close, when the server ends the session."""
        ...


@runtime_checkable
class WarnsOfLowCredit(Protocol):
    """A live protocol that tells its client, once, when the key's credit runs low."""

    def credits_low(self, seconds_remaining: float) -> list[Action]:
        """The warning to send; the shell asks once per session, when credit falls under the dial."""
        ...
