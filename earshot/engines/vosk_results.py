"""Vosk's result JSON as earshot results, and a recognizer's flow of them; no vosk import here.

Vosk reports, after each chunk of audio, either the end of an utterance (`Result()`: `{"text", "result":
[{"word", "start", "end", "conf"}]}`, or `{"alternatives": [{"text", "confidence", "result"}]}` when
alternatives are on) or the utterance so far (`PartialResult()`: `{"partial"}`); `FinalResult()` ends the
utterance wherever it is.
Times are seconds since the recognizer was created, across utterances.
"""

from __future__ import annotations

import json
import math
from typing import Any, Protocol

from earshot.audio.pcm import ENGINE_RATE_HZ
from earshot.engines.base import Segment
from earshot.engines.results import EngineResult, Final, Partial, Word


class Recognizer(Protocol):
    """The part of `vosk.KaldiRecognizer` earshot uses."""

    def AcceptWaveform(self, data: bytes) -> int: ...

    def Result(self) -> str: ...

    def PartialResult(self) -> str: ...

    def FinalResult(self) -> str: ...


def _parse(raw: str) -> dict[str, Any]:
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def words_of(entries: list[dict[str, Any]]) -> tuple[Word, ...]:
    """Vosk's word entries as Words; a missing confidence (alternatives give none per word) counts as 1."""
    words = []
    for entry in entries:
        text = str(entry.get("word", "")).strip()
        if not text:
            continue
        confidence = min(1.0, max(0.0, float(entry.get("conf", 1.0))))
        words.append(
            Word(text, round(float(entry["start"]), 3), round(float(entry["end"]), 3), round(confidence, 4))
        )
    return tuple(words)


def final_from_json(raw: str, start_s: float, end_s: float) -> Final | None:
    """The Final of an utterance result, or None when it heard nothing; times default to the utterance's."""
    result = _parse(raw)
    alternatives = result.get("alternatives")
    if isinstance(alternatives, list) and alternatives:
        result = alternatives[0] if isinstance(alternatives[0], dict) else {}
    words = words_of(result.get("result") or [])
    text = " ".join(word.word for word in words) if words else str(result.get("text", "")).strip()
    if not text:
        return None
    if words:
        start_s, end_s = words[0].start, words[-1].end
    return Final(text=text, start=start_s, end=end_s, words=words)


def partial_from_json(raw: str, start_s: float, end_s: float) -> Partial | None:
    """The Partial of a partial result, or None when it is empty."""
    text = str(_parse(raw).get("partial", "")).strip()
    return Partial(text=text, start=start_s, end=end_s) if text else None


def segment_of(final: Final) -> Segment:
    """A one-shot segment from an utterance's Final; its log-probability is the words' mean log-confidence."""
    logs = [math.log(max(word.confidence, 1e-6)) for word in final.words]
    avg_logprob = sum(logs) / len(logs) if logs else 0.0
    return Segment(final.start, final.end, final.text, final.words, avg_logprob=round(avg_logprob, 4))


class RecognizerFeed:
    """A recognizer fed PCM16: its utterances as Finals, and Partials when the text so far changes."""

    def __init__(self, recognizer: Recognizer, interim_results: bool = True) -> None:
        self._recognizer = recognizer
        self._interim_results = interim_results
        self._samples_seen = 0
        self._utterance_start: int | None = None
        self._last_partial = ""

    def feed(self, pcm16: bytes) -> list[EngineResult]:
        """Recognise more audio; an utterance end gives its Final, otherwise a changed Partial may come."""
        if not pcm16:
            return []
        if self._utterance_start is None:
            self._utterance_start = self._samples_seen
        self._samples_seen += len(pcm16) // 2
        if self._recognizer.AcceptWaveform(pcm16):
            return self._end(self._recognizer.Result())
        if not self._interim_results:
            return []
        partial = partial_from_json(self._recognizer.PartialResult(), self._start_s(), self._now_s())
        if partial is None or partial.text == self._last_partial:
            return []
        self._last_partial = partial.text
        return [partial]

    def finalize(self) -> list[EngineResult]:
        """End the utterance in progress; its Final, if it had words."""
        if self._utterance_start is None:
            return []
        return self._end(self._recognizer.FinalResult())

    def _end(self, raw: str) -> list[EngineResult]:
        final = final_from_json(raw, self._start_s(), self._now_s())
        self._utterance_start = None
        self._last_partial = ""
        return [final] if final is not None else []

    def _start_s(self) -> float:
        start = self._samples_seen if self._utterance_start is None else self._utterance_start
        return start / ENGINE_RATE_HZ

    def _now_s(self) -> float:
        return self._samples_seen / ENGINE_RATE_HZ
