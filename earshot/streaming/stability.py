"""One turn's text as an engine revises it: words that stop changing become Finals before the turn ends.

Incremental engines such as pocketsphinx revise their hypothesis of the current utterance until it ends.
Callers that want append-only text while a person is still speaking need the stable part early, so words
every hypothesis over the last STABLE_S seconds agreed on (a local agreement over time, holding back the word
still being spoken) are finalized at once; when the engine's own Final arrives, only the words after those
already finalized are reported.
"""

from __future__ import annotations

import re
from collections import deque
from difflib import SequenceMatcher

from earshot.streaming.events import Final, Partial, Word

# The last word of an incremental hypothesis is usually still being spoken; it is never finalized early.
HOLD_BACK_WORDS = 2
# A word is finalized early once every hypothesis over this much further audio agreed on it.
STABLE_S = 2.0
_EDGE_PUNCTUATION = re.compile(r"^\W+|\W+$")


class TurnText:
    """Turns an engine's Partials and Finals for one turn into append-only Finals and a tentative Partial."""

    def __init__(self, before: TurnText | None = None) -> None:
        self._early: list[str] = []
        self._history: deque[tuple[float, list[str]]] = deque()
        self._tentative = ""
        # Whether the tentative text is a draft: shown, but never final, even when the engine gives no Final.
        self._tentative_is_draft = False
        # Where the words finalized early end: what follows them starts there, not at the turn's start.
        self._early_end_s: float | None = None
        self.end_s: float = before.end_s if before is not None else 0.0

    def on_result(self, result: Partial | Final, offset_s: float) -> list[Partial | Final]:
        """Session events for one engine result whose times are `offset_s` behind the session clock."""
        start_s, end_s = result.start + offset_s, result.end + offset_s
        self.end_s = max(self.end_s, end_s)
        if isinstance(result, Final):
            return self._on_final(result, offset_s)
        hypothesis = result.text.split()
        if result.draft:
            # The engine decodes this audio again in full; that decode's words are the final ones.
            return self._tentative_partial(hypothesis, start_s, end_s, draft=True)
        self._history.append((end_s, [_normalised(word) for word in hypothesis]))
        while len(self._history) > 1 and self._history[1][0] <= end_s - STABLE_S:
            self._history.popleft()
        events: list[Partial | Final] = []
        rest = hypothesis[_after_index(self._early, self._history[-1][1]) :]
        settled = rest[: self._settled_count(end_s)]
        if self._early_end_s is not None:
            start_s = self._early_end_s
        if settled:
            self._early.extend(_normalised(word) for word in settled)
            events.append(_final([Word(word, start_s, end_s) for word in settled], start_s, end_s))
            rest = rest[len(settled) :]
            start_s = self._early_end_s = end_s
        return events + self._tentative_partial(rest, start_s, end_s)

    def _tentative_partial(
        self, words: list[str], start_s: float, end_s: float, draft: bool = False
    ) -> list[Partial | Final]:
        tentative = " ".join(words)
        self._tentative_is_draft = draft
        if tentative == self._tentative:
            return []
        self._tentative = tentative
        return [Partial(tentative, start_s, end_s)]

    def _settled_count(self, end_s: float) -> int:
        """How many words after the early ones every hypothesis of the last STABLE_S seconds agrees on."""
        oldest_s, _ = self._history[0]
        if oldest_s > end_s - STABLE_S:
            return 0
        rests = [words[_after_index(self._early, words) :] for _, words in self._history]
        newest = rests[-1]
        count = 0
        while count < len(newest) - HOLD_BACK_WORDS and all(
            count < len(rest) and rest[count] == newest[count] for rest in rests
        ):
            count += 1
        return count

    def _on_final(self, result: Final, offset_s: float) -> list[Partial | Final]:
        words = result.words or tuple(Word(text, result.start, result.end) for text in result.text.split())
        remainder = list(words)[_after_index(self._early, [_normalised(w.word) for w in words]) :]
        self._early.clear()
        self._history.clear()
        self._tentative = ""
        self._tentative_is_draft = False
        self._early_end_s = None
        if not remainder:
            return []
        shifted = [Word(w.word, w.start + offset_s, w.end + offset_s, w.confidence) for w in remainder]
        return [_final(shifted, shifted[0].start, result.end + offset_s, result.speaker)]

    def flush(self) -> list[Final]:
        """Finalize whatever is still tentative (the engine gave no Final for it), unless it is a draft: the
        full decode that gave no words is the phrase's text, not a draft that happened to come before it."""
        rest, self._tentative = self._tentative.split(), ""
        if self._tentative_is_draft:
            rest, self._tentative_is_draft = [], False
        self._early_end_s = None
        self._early.clear()
        self._history.clear()
        if not rest:
            return []
        return [_final([Word(w, self.end_s, self.end_s) for w in rest], self.end_s, self.end_s)]


def _final(words: list[Word], start_s: float, end_s: float, speaker: int | None = None) -> Final:
    return Final(" ".join(w.word for w in words), start_s, end_s, tuple(words), speaker)


def _normalised(word: str) -> str:
    return _EDGE_PUNCTUATION.sub("", word.lower())


def _after_index(early: list[str], words: list[str]) -> int:
    """Where the words after those already finalized early begin in a (normalised) hypothesis.

    The early words are aligned to the hypothesis; early words it revised count as substitutions, so each
    spoken word is reported once.
    """
    if not early:
        return 0
    matcher = SequenceMatcher(a=early, b=words, autojunk=False)
    early_end = words_end = 0
    for block in matcher.get_matching_blocks():
        if block.size:
            early_end, words_end = block.a + block.size, block.b + block.size
    return min(len(words), words_end + len(early) - early_end)
