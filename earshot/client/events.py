"""What a streaming transcription reports to its caller, the same for every server it talks to."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Transcript:
    """Text for a stretch of audio; `is_final` text is never revised. Times count from the first sample."""

    text: str
    is_final: bool
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    """The speaker finished an utterance: every final of it has been given."""

    end: float


@dataclass(frozen=True, slots=True)
class CreditsLow:
    """The key's credit is running low (managed mode)."""

    seconds_remaining: float


@dataclass(frozen=True, slots=True)
class ServerError:
    """An error the server reported; `fatal` errors end the transcription instead of reconnecting."""

    code: str
    message: str
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """One connection's session ended; the server counted `seconds_used` of audio on it."""

    seconds_used: float


@dataclass(slots=True)
class Summary:
    """How a whole transcription went, over every connection it took."""

    seconds_captured: float = 0.0
    seconds_used: float = 0.0
    connections: int = 0
    finals: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """Every final, joined."""
        return " ".join(text for text in self.finals if text)


class TranscriberError(Exception):
    """The transcription could not start or go on."""


class ConnectError(TranscriberError):
    """The server could not be reached, or did not answer in time."""


class AuthError(TranscriberError):
    """The server refused the key, the model, or the key's credit."""
