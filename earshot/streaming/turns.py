"""Turn detection: where speech turns start and end, from Silero's per-window speech probabilities.

Pure and clock-free: window k fed since the start (or the last `reset(at_ms)`) covers
[at_ms + k * WINDOW_MS, at_ms + (k + 1) * WINDOW_MS) of the session's audio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from earshot.audio.vad import WINDOW_MS, VadParams

HYSTERESIS = 0.15
MIN_SILENCE_THRESHOLD = 0.01


@dataclass(frozen=True, slots=True)
class TurnStarted:
    """A turn began: its audio starts at `audio_start_ms` (padded), its first speech at `onset_ms`."""

    audio_start_ms: int
    onset_ms: int


@dataclass(frozen=True, slots=True)
class TurnEnded:
    """A turn ended: its speech stops at `audio_end_ms` (trailing silence excluded)."""

    audio_end_ms: int


class TurnDetector:
    """Speech turns of one session, from window probabilities, with Silero-style hysteresis."""

    def __init__(self, params: VadParams) -> None:
        self.params = params
        self._speech_threshold = params.threshold
        self._silence_threshold = max(params.threshold - HYSTERESIS, MIN_SILENCE_THRESHOLD)
        self.reset()

    @property
    def in_speech(self) -> bool:
        """Whether a turn is open."""
        return self._turn_start_ms is not None

    @property
    def speech_since_ms(self) -> int | None:
        """Where the open turn's audio starts (prefix padding included), or None between turns."""
        return self._turn_start_ms

    def reset(self, at_ms: int = 0) -> None:
        """Forget any open turn; the next window fed starts at `at_ms` and no padding reaches before it."""
        self._next_window_ms = at_ms
        self._floor_ms = at_ms
        self._turn_start_ms: int | None = None
        self._silence_since_ms: int | None = None

    def feed(self, probabilities: Sequence[float] | np.ndarray) -> list[TurnStarted | TurnEnded]:
        """The turns that start or end in these consecutive windows, in order."""
        events: list[TurnStarted | TurnEnded] = []
        values = probabilities.tolist() if isinstance(probabilities, np.ndarray) else probabilities
        for probability in values:
            start_ms = self._next_window_ms
            end_ms = start_ms + WINDOW_MS
            self._next_window_ms = end_ms
            if self._turn_start_ms is None:
                if probability >= self._speech_threshold:
                    self._turn_start_ms = max(start_ms - self.params.prefix_padding_ms, self._floor_ms)
                    self._silence_since_ms = None
                    events.append(TurnStarted(self._turn_start_ms, start_ms))
            elif probability >= self._speech_threshold:
                self._silence_since_ms = None
            elif probability < self._silence_threshold:
                if self._silence_since_ms is None:
                    self._silence_since_ms = start_ms
                if end_ms - self._silence_since_ms >= self.params.silence_duration_ms:
                    events.append(self._end(self._silence_since_ms))
        return events

    def flush(self) -> list[TurnEnded]:
        """End the open turn now, at its last speech window; nothing when no turn is open."""
        if self._turn_start_ms is None:
            return []
        end_ms = self._silence_since_ms if self._silence_since_ms is not None else self._next_window_ms
        return [self._end(end_ms)]

    def _end(self, end_ms: int) -> TurnEnded:
        self._turn_start_ms = None
        self._silence_since_ms = None
        self._floor_ms = end_ms
        return TurnEnded(end_ms)
