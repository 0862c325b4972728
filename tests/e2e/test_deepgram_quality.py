"""Deepgram live transcripts are as good as one-shot ones: WER over the English clips within half a point."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import numpy as np
import pytest
import websockets

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import float_to_pcm16
from tests.conftest import ENGLISH_CLIPS, Clip, RunningServer, start_server, stop_server
from tests.e2e.realtime_client import silence
from tests.e2e.wer import one_shot, word_errors, words

CONCURRENT_SESSIONS = 4
CHUNK_BYTES = 3200  # 100 ms of 16 kHz PCM16


@pytest.fixture(scope="module")
def quality_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("deepgram-quality"))
    try:
        yield server
    finally:
        stop_server(server)


async def live(url: str, clip: Clip, gate: asyncio.Semaphore) -> str:
    """The final Results of a stream of the clip and a second of silence, ended by CloseStream."""
    samples = np.concatenate([decode_audio(clip.path.read_bytes()).samples, silence(1.0)])
    audio = float_to_pcm16(samples)
    finals: list[str] = []
    async with gate, websockets.connect(url, max_size=None) as ws:
        for start in range(0, len(audio), CHUNK_BYTES):
            await ws.send(audio[start : start + CHUNK_BYTES])
        await ws.send(json.dumps({"type": "CloseStream"}))
        # The server sends the last finals, then Metadata, then closes.
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] == "Results" and message["is_final"]:
                finals.append(message["channel"]["alternatives"][0]["transcript"])
            elif message["type"] == "Metadata":
                break
    return " ".join(text for text in finals if text)


async def all_live(server: RunningServer, clips: list[Clip]) -> list[str]:
    url = (
        server.base_url.replace("http://", "ws://")
        + "/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000"
    )
    gate = asyncio.Semaphore(CONCURRENT_SESSIONS)
    return list(await asyncio.gather(*(live(url, clip, gate) for clip in clips)))


def test_live_word_error_rate_is_within_half_a_point_of_one_shot(quality_server: RunningServer) -> None:
    if not ENGLISH_CLIPS:
        pytest.skip("../shared/audio is absent")
    references = [words(clip.transcript) for clip in ENGLISH_CLIPS]
    total = sum(len(reference) for reference in references)
    offline = [one_shot(quality_server, clip) for clip in ENGLISH_CLIPS]
    streamed = asyncio.run(all_live(quality_server, ENGLISH_CLIPS))
    offline_wer = sum(map(word_errors, references, map(words, offline))) / total * 100
    live_wer = sum(map(word_errors, references, map(words, streamed))) / total * 100
    summary = f"one-shot {offline_wer:.2f}, Deepgram live {live_wer:.2f}"
    print(f"\nWER over {len(ENGLISH_CLIPS)} clips, {total} words: {summary}")
    assert live_wer <= offline_wer + 0.5
    assert sum(bool(text) for text in streamed) >= len(ENGLISH_CLIPS) * 0.8, "live streams give text"
