"""Word error rate against the shared clips' exact transcripts, and running live sessions over many clips."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import numpy as np

from earshot.audio.decode import decode_audio
from tests.conftest import Clip
from tests.e2e.realtime_client import silence

CONCURRENT_SESSIONS = 4

LiveTranscribe = Callable[[str, Clip], Awaitable[str]]


_UNITS = "zero one two three four five six seven eight nine ten eleven twelve".split()  # noqa: SIM905
_UNITS += "thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()  # noqa: SIM905
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()  # noqa: SIM905
_SPELLED = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}


def _number_words(digits: str) -> list[str]:
    """How a number written in digits is read: 0-99 as words, anything longer digit by digit."""
    value = int(digits)
    if len(digits) > 2 or (len(digits) == 2 and digits[0] == "0"):
        return [_UNITS[int(d)] for d in digits]
    if value < 20:
        return [_UNITS[value]]
    return [_TENS[value // 10]] + ([_UNITS[value % 10]] if value % 10 else [])


def words(text: str) -> list[str]:
    """Lowercase words, punctuation gone, numbers and common abbreviations spelled out (as Whisper's
    normaliser does for WER): "Go forward 10 meters." and "go forward ten meters" are the same words."""
    result: list[str] = []
    for token in re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split():
        if token.isdigit():
            result.extend(_number_words(token))
        else:
            result.append(_SPELLED.get(token, token))
    return result


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Substitutions, insertions and deletions between two word sequences (Levenshtein)."""
    row = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        diagonal, row[0] = row[0], i
        for j, hyp_word in enumerate(hypothesis, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ref_word != hyp_word))
    return row[-1]


def word_error_rate(clips: list[Clip], texts: list[str]) -> float:
    """WER in percent of `texts` against the clips' transcripts, over all their words."""
    references = [words(clip.transcript) for clip in clips]
    errors = sum(map(word_errors, references, map(words, texts)))
    return errors / sum(len(reference) for reference in references) * 100


def clip_then_silence(clip: Clip) -> np.ndarray:
    """The clip's 16 kHz samples followed by a second of silence, so the last turn ends."""
    return np.concatenate([decode_audio(clip.path.read_bytes()).samples, silence(1.0)])


async def transcribe_all_live(url: str, clips: list[Clip], live: LiveTranscribe) -> list[str]:
    """Each clip's live transcript, at most CONCURRENT_SESSIONS sessions at a time."""
    gate = asyncio.Semaphore(CONCURRENT_SESSIONS)

    async def gated(clip: Clip) -> str:
        async with gate:
            return await live(url, clip)

    return list(await asyncio.gather(*(gated(clip) for clip in clips)))
