"""Where a live session cuts its phrases depends on the audio alone: chunk sizes never move a cut."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import Audio, float_to_pcm16
from earshot.audio.vad import SileroModel
from earshot.engines.base import Segment, TranscribeOptions
from earshot.engines.results import EngineResult, Flushed
from earshot.streaming.live_config import LiveConfig
from earshot.streaming.session import LiveSession
from tests.conftest import shared_audio

# Speech with pauses inside its sentences, so a session cuts it into several phrases.
CLIP = "jfk/jfk.flac"


class RecordingStream:
    """Keeps the audio of each finalized stretch, in order."""

    def __init__(self, phrases: list[np.ndarray]) -> None:
        self._phrases = phrases
        self._pending: list[np.ndarray] = []
        self._results: asyncio.Queue[EngineResult | None] = asyncio.Queue()

    async def send(self, audio: Audio) -> None:
        self._pending.append(audio.samples)

    async def finalize(self) -> None:
        if self._pending:
            self._phrases.append(np.concatenate(self._pending))
            self._pending = []
        self._results.put_nowait(Flushed())

    async def close(self) -> None:
        await self.finalize()
        self._results.put_nowait(None)

    async def results(self) -> AsyncIterator[EngineResult]:
        while (result := await self._results.get()) is not None:
            yield result


class RecordingEngine:
    name = "recording"
    ready = True
    language = "en"

    def __init__(self) -> None:
        self.phrases: list[np.ndarray] = []

    async def start(self) -> None:
        """Nothing to load."""

    async def stop(self) -> None:
        """Nothing to release."""

    async def transcribe_segments(self, audio: Audio, options: TranscribeOptions) -> AsyncIterator[Segment]:
        return
        yield

    def open_stream(self, options: TranscribeOptions) -> RecordingStream:
        return RecordingStream(self.phrases)


async def phrases_heard(pcm: bytes, chunk_bytes: int) -> list[np.ndarray]:
    engine = RecordingEngine()
    session = LiveSession(engine, TranscribeOptions(), LiveConfig(), vad_stream=SileroModel.shared().stream)
    for start in range(0, len(pcm), chunk_bytes):
        await session.append(pcm[start : start + chunk_bytes])
    await session.close()
    return engine.phrases


@pytest.mark.parametrize("chunk_ms", [1, 37, 250, 1000])
async def test_phrases_are_cut_at_the_same_samples_whatever_the_chunk_size(chunk_ms: int) -> None:
    samples = decode_audio(shared_audio(CLIP).read_bytes()).samples
    pcm = float_to_pcm16(np.concatenate([samples, np.zeros(16_000, np.float32)]))
    reference = await phrases_heard(pcm, 2 * 16 * 20)
    assert len(reference) >= 2, "the clip's pauses cut it into phrases"
    phrases = await phrases_heard(pcm, 2 * 16 * chunk_ms)
    assert [len(phrase) for phrase in phrases] == [len(phrase) for phrase in reference]
    assert all(np.array_equal(a, b) for a, b in zip(phrases, reference, strict=True))
