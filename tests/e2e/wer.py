"""Word error rate against the shared clips' exact transcripts, and the live-versus-one-shot quality check."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import httpx
import numpy as np
import pytest

from earshot.audio.decode import decode_audio
from tests.conftest import ENGLISH_CLIPS, Clip, RunningServer
from tests.e2e.realtime_client import silence

CONCURRENT_SESSIONS = 4

LiveTranscribe = Callable[[str, Clip], Awaitable[str]]


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Substitutions, insertions and deletions between two word sequences (Levenshtein)."""
    row = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        diagonal, row[0] = row[0], i
        for j, hyp_word in enumerate(hypothesis, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ref_word != hyp_word))
    return row[-1]


def one_shot(server: RunningServer, clip: Clip) -> str:
    response = httpx.post(
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": (clip.path.name, clip.path.read_bytes())},
        data={"model": "whisper-1", "response_format": "text"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response.text


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


def assert_live_wer_near_one_shot(server: RunningServer, url: str, live: LiveTranscribe, label: str) -> None:
    """Live WER over the English clips is within half a point of one-shot's, and most sessions give text."""
    if not ENGLISH_CLIPS:
        pytest.skip("../shared/audio is absent")
    references = [words(clip.transcript) for clip in ENGLISH_CLIPS]
    total = sum(len(reference) for reference in references)
    offline = [one_shot(server, clip) for clip in ENGLISH_CLIPS]
    streamed = asyncio.run(transcribe_all_live(url, ENGLISH_CLIPS, live))
    offline_wer = sum(map(word_errors, references, map(words, offline))) / total * 100
    live_wer = sum(map(word_errors, references, map(words, streamed))) / total * 100
    summary = f"one-shot {offline_wer:.2f}, {label} {live_wer:.2f}"
    print(f"\nWER over {len(ENGLISH_CLIPS)} clips, {total} words: {summary}")
    assert live_wer <= offline_wer + 0.5
    assert sum(bool(text) for text in streamed) >= len(ENGLISH_CLIPS) * 0.8, "live sessions give text"
