"""WhisperLiveKit's `/asr` protocol, client side and without I/O: its transcript states as earshot results.

A WhisperLiveKit server sends the whole transcript state after each change: committed `lines` (each with its
text and "H:MM:SS" start and end) and a `buffer_transcription` it may still revise, plus
`remaining_time_transcription`, how far (in seconds) its processing lags behind the wall clock since the
first audio. So the audio it has processed is `(report time - first audio time) - remaining`: that is the
progress the upload is paced against, since the server works from a bounded queue at real-time pace and a
client far ahead of it overflows the queue.

Newly committed words become Finals; the buffer becomes Partials. WhisperLiveKit has no flush, so a
finalize is answered once the server's progress reaches the audio sent before it: the buffer is then made
Final (the server's best reading of that audio) and Flushed follows. Those words are remembered, and when
the server later commits them they are not reported again.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from earshot.engines.results import EngineResult, Final, Flushed, Partial

# Reported progress within this of the target counts as reaching it (remaining time is rounded to 0.1 s).
PROGRESS_TOLERANCE_S = 0.15
_EDGE_PUNCTUATION = re.compile(r"^\W+|\W+$")


@dataclass(frozen=True, slots=True)
class Line:
    """One committed line of a transcript state."""

    text: str
    start: float
    end: float


def seconds_of(value: Any) -> float:
    """A line time in seconds: WhisperLiveKit sends "H:MM:SS"; numbers are taken as they are."""
    if isinstance(value, int | float):
        return float(value)
    total = 0.0
    for part in str(value or "0").split(":"):
        total = total * 60 + float(part or 0)
    return total


def lines_of(state: dict[str, Any]) -> list[Line]:
    """The committed lines of a state message (silence markers and empty lines dropped)."""
    lines = []
    for item in state.get("lines") or ():
        text = str(item.get("text") or "").strip()
        if text:
            start = seconds_of(item.get("start", item.get("beg")))  # older servers said "beg"
            lines.append(Line(text, start, seconds_of(item.get("end"))))
    return lines


def _normalised(word: str) -> str:
    return _EDGE_PUNCTUATION.sub("", word.lower())


@dataclass(slots=True)
class _PendingFlush:
    until_s: float
    asked_at: float


class WhisperLiveKitProtocol:
    """Progress, pacing and results of one `/asr` connection; the caller supplies the clock."""

    def __init__(self, max_lead_s: float, finalize_grace_s: float, interim_results: bool) -> None:
        self.max_lead_s = max_lead_s
        self.finalize_grace_s = finalize_grace_s
        self.interim_results = interim_results
        self.sent_s = 0.0
        self.first_audio_at: float | None = None
        self.reported_progress_s = 0.0
        self.lines: list[Line] = []
        self.buffer = ""
        self.stopped = False
        self._remaining_s = 0.0
        self._emitted_words = 0
        self._final_until_s = 0.0
        self._owed: deque[str] = deque()
        self._pending: deque[_PendingFlush] = deque()
        self._last_partial = ""

    def progress_s(self, now: float) -> float:
        """Seconds of audio the server has processed by `now`, extrapolated from its last report."""
        if self.first_audio_at is None:
            return 0.0
        return max(self.reported_progress_s, now - self.first_audio_at - self._remaining_s)

    def wait_before_sending_s(self, seconds: float, now: float) -> float:
        """How long to hold back `seconds` of audio so the server's queue stays within `max_lead_s`."""
        if self.first_audio_at is None:
            return 0.0
        return max(0.0, self.sent_s + seconds - self.max_lead_s - self.progress_s(now))

    def audio_sent(self, seconds: float, now: float) -> None:
        """Audio of this length went up."""
        if self.first_audio_at is None:
            self.first_audio_at = now
        self.sent_s += seconds

    def finalize(self, now: float) -> list[EngineResult]:
        """Ask for a flush of everything sent; answered by `on_state` or `tick` once progress gets there."""
        self._pending.append(_PendingFlush(self.sent_s, now))
        return self.tick(now)

    def on_state(self, state: dict[str, Any], now: float) -> list[EngineResult]:
        """Results for one transcript state message."""
        if self.first_audio_at is not None and "remaining_time_transcription" in state:
            self._remaining_s = float(state.get("remaining_time_transcription") or 0.0)
            reported = now - self.first_audio_at - self._remaining_s
            self.reported_progress_s = min(self.sent_s, max(self.reported_progress_s, reported))
        self.lines = lines_of(state)
        self.buffer = str(state.get("buffer_transcription") or "").strip()
        results = self._committed()
        results += self._flushes(now)
        if self.interim_results:
            results += self._partial()
        return results

    def on_stopped(self) -> list[EngineResult]:
        """Results once the server said `ready_to_stop`: everything is final, every finalize flushed."""
        self.stopped = True
        results = self._committed()
        results += self._buffer_final()
        results += [Flushed() for _ in self._pending]
        self._pending.clear()
        return results

    def tick(self, now: float) -> list[EngineResult]:
        """Flushes due by `now`."""
        return self._flushes(now)

    def _committed(self) -> list[EngineResult]:
        words = [(word, line) for line in self.lines for word in line.text.split()]
        if len(words) < self._emitted_words:
            self._emitted_words = len(words)  # the server rewrote its lines; go on from where they end now
        fresh = words[self._emitted_words :]
        self._emitted_words = len(words)
        skip = 0
        while skip < len(fresh) and self._owed and _normalised(fresh[skip][0]) == self._owed[0]:
            self._owed.popleft()
            skip += 1
        if skip < len(fresh):
            self._owed.clear()  # the server revised what was flushed early; report its words as they are now
        fresh = fresh[skip:]
        if not fresh:
            return []
        start, end = max(fresh[0][1].start, self._final_until_s), max(fresh[-1][1].end, self._final_until_s)
        self._final_until_s = end
        self._last_partial = ""
        return [Final(" ".join(word for word, _ in fresh), start, end)]

    def _unowed_buffer(self) -> list[str]:
        words = self.buffer.split()
        owed = list(self._owed)
        skip = 0
        while skip < min(len(words), len(owed)) and _normalised(words[skip]) == owed[skip]:
            skip += 1
        return words[skip:]

    def _buffer_final(self) -> list[EngineResult]:
        words = self._unowed_buffer()
        if not words:
            return []
        if not self.stopped:
            self._owed.extend(_normalised(word) for word in words)
        start = self._final_until_s
        end = max(start, self.reported_progress_s)
        self._final_until_s = end
        self._last_partial = ""
        return [Final(" ".join(words), start, end)]

    def _flushes(self, now: float) -> list[EngineResult]:
        results: list[EngineResult] = []
        while self._pending:
            pending = self._pending[0]
            reached = self.reported_progress_s >= pending.until_s - PROGRESS_TOLERANCE_S
            # A server with nothing new to say sends no state: after the grace period, trust the clock.
            waited = now - pending.asked_at >= self.finalize_grace_s
            if not (reached or (waited and self.progress_s(now) >= pending.until_s + self.finalize_grace_s)):
                break
            self._pending.popleft()
            results += self._buffer_final()
            results.append(Flushed())
        return results

    def _partial(self) -> list[EngineResult]:
        text = " ".join(self._unowed_buffer())
        if text == self._last_partial:
            return []
        self._last_partial = text
        return [Partial(text, self._final_until_s, max(self._final_until_s, self.reported_progress_s))]
