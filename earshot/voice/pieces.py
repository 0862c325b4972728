"""Text cut into pieces to synthesize one after another, so the first audio leaves before the last is made."""

from __future__ import annotations

import re

# A sentence ends at . ! ? ; or : followed by space and a capital, digit or quote (so "e.g. this" stays
# whole), or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+(?=[A-Z0-9\"'(])|\n+")
# A piece longer than this is cut at the last space before it, so one long sentence doesn't hold up the start.
MAX_PIECE_CHARS = 300


def text_pieces(text: str, max_chars: int = MAX_PIECE_CHARS) -> list[str]:
    """The text's sentences, in order, none longer than `max_chars` (cut between words where possible)."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = " ".join(sentence.split())
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 0, max_chars + 1)
            cut = cut if cut > 0 else max_chars
            pieces.append(sentence[:cut])
            sentence = sentence[cut:].lstrip()
        if sentence:
            pieces.append(sentence)
    return pieces
