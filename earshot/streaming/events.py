"""The internal live model: every protocol's conversation, as frozen dataclasses.

Times are seconds on the session's audio clock (0 = first sample received).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word with its time span and confidence (0..1)."""

    word: str
    start: float
    end: float
    confidence: float = 1.0


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Voice activity began at `t`."""

    t: float


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """Voice activity ended at `t`."""

    t: float


@dataclass(frozen=True, slots=True)
class Partial:
    """Text of the current turn so far; a later Partial or Final may revise it.

    A `draft` is a quick decode of audio the engine will decode again in full: its words are never made final
    early, so a stretch's final text is the full decode's alone.
    """

    text: str
    start: float
    end: float
    draft: bool = False


@dataclass(frozen=True, slots=True)
class Final:
    """Text of a finished stretch of audio; never revised."""

    text: str
    start: float
    end: float
    words: tuple[Word, ...] = field(default_factory=tuple)
    speaker: int | None = None


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    """The speaker finished an utterance; the last word ended at `t`."""

    t: float


@dataclass(frozen=True, slots=True)
class PhraseEnd:
    """A phrase inside a turn ended at `t` (the session cut it at a pause): its Finals have all been given."""

    t: float


@dataclass(frozen=True, slots=True)
class Error:
    """Something went wrong in the session; `code` is stable, `message` is for people."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Flushed:
    """From an engine stream: every result for the audio sent before the last `finalize` has been given."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The session ended; nothing follows."""


EngineResult = Partial | Final | Flushed
SessionEvent = SpeechStarted | SpeechStopped | Partial | Final | PhraseEnd | UtteranceEnd | Error | Closed
