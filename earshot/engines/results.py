"""What an engine stream gives back, as frozen dataclasses: text so far, final text, and the flush marker.

Times are seconds on the stream's audio clock (0 = first sample sent). The live session passes `Partial` and
`Final` on as session events (`streaming/events.py`).
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
class Flushed:
    """From an engine stream: every result for the audio sent before the last `finalize` has been given."""


EngineResult = Partial | Final | Flushed
