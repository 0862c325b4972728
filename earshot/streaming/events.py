"""The internal live model: every protocol's conversation, as frozen dataclasses.

Times are seconds on the session's audio clock (0 = first sample received). The engine results (`Word`,
`Partial`, `Final`, `Flushed`) live in `engines/results.py` and are re-exported here: a session passes its
engine's `Partial` and `Final` on unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from earshot.engines.results import EngineResult, Final, Flushed, Partial, Word

__all__ = [
    "Closed",
    "EngineResult",
    "Error",
    "Final",
    "Flushed",
    "Partial",
    "PhraseEnd",
    "SessionEvent",
    "SpeechStarted",
    "SpeechStopped",
    "UtteranceEnd",
    "Word",
]


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Voice activity began at `t`."""

    t: float


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """Voice activity ended at `t`."""

    t: float


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
class Closed:
    """The session ended; nothing follows."""


SessionEvent = SpeechStarted | SpeechStopped | Partial | Final | PhraseEnd | UtteranceEnd | Error | Closed
