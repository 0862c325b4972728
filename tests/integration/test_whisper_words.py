"""Asking for word times never changes what Whisper (the default tiny.en) says.

faster-whisper's own word timestamps re-decode the audio after the last word, which repeats short phrases
("three. three."); earshot decodes the text without them and aligns the words to it afterwards.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import Audio
from earshot.engines.base import Engine, TranscribeOptions, transcribe
from earshot.engines.results import Word
from tests.conftest import ENGLISH_CLIPS

# Short isolated words, where the repeat showed, and a few sentences.
CLIPS = sorted(ENGLISH_CLIPS, key=lambda clip: clip.duration_s)[:16] + ENGLISH_CLIPS[:4]


@pytest.mark.skipif(not ENGLISH_CLIPS, reason="../shared/audio is absent (it sits beside the repo)")
async def test_word_timestamps_keep_the_text_and_time_every_word(default_engine: Engine) -> None:
    async def both(samples: np.ndarray) -> tuple[str, str, list[Word], float]:
        audio = Audio(samples)
        plain, timed = await asyncio.gather(
            transcribe(default_engine, audio, TranscribeOptions(speech_gated=True)),
            transcribe(default_engine, audio, TranscribeOptions(speech_gated=True, word_timestamps=True)),
        )
        return plain.text, timed.text, list(timed.words), audio.duration_s

    results = await asyncio.gather(*(both(decode_audio(clip.path.read_bytes()).samples) for clip in CLIPS))
    assert [(clip.path.name, p, t) for clip, (p, t, _, _) in zip(CLIPS, results, strict=True) if p != t] == []
    for plain, _, words, duration_s in results:
        # Every word of the text is timed (Whisper's words may split a hyphenated one).
        assert "".join(word.word for word in words) == plain.replace(" ", "")
        times = [(word.start, word.end) for word in words]
        assert all(0 <= start <= end <= duration_s for start, end in times)
        assert times == sorted(times)
