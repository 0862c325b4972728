"""Live transcripts are as good as one-shot ones: WER over the English clips within half a point."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import numpy as np
import pytest
import websockets

from earshot.audio.decode import decode_audio
from tests.conftest import ENGLISH_CLIPS, Clip, RunningServer, start_server, stop_server
from tests.e2e.realtime_client import chunks, pcm24, silence
from tests.e2e.wer import one_shot, word_errors, words

CONCURRENT_SESSIONS = 4


@pytest.fixture(scope="module")
def quality_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("quality"))
    try:
        yield server
    finally:
        stop_server(server)


async def live(url: str, clip: Clip, gate: asyncio.Semaphore) -> str:
    """Every completed transcript of a session that streams the clip then a second of silence."""
    samples = np.concatenate([decode_audio(clip.path.read_bytes()).samples, silence(1.0)])
    async with gate, websockets.connect(url, max_size=None) as ws:
        await ws.recv()
        for payload in chunks(pcm24(samples), 48_000, 100):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": payload}))
        # Messages are handled in order: once the answer to an update arrives, every append before it
        # has been heard, and every turn committed by then (the last one by the commit) is awaited.
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription"}}))
        committed, heard_all = 0, False
        transcripts: list[str] = []
        while not heard_all or len(transcripts) < committed:
            event = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if event["type"] == "input_audio_buffer.committed":
                committed += 1
            elif event["type"] == "conversation.item.input_audio_transcription.completed":
                transcripts.append(event["transcript"])
            heard_all = heard_all or event["type"] == "session.updated"
        return " ".join(transcripts)


async def all_live(server: RunningServer, clips: list[Clip]) -> list[str]:
    url = server.base_url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
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
    summary = f"one-shot {offline_wer:.2f}, live {live_wer:.2f}"
    print(f"\nWER over {len(ENGLISH_CLIPS)} clips, {total} words: {summary}")
    assert live_wer <= offline_wer + 0.5
    assert sum(bool(text) for text in streamed) >= len(ENGLISH_CLIPS) * 0.8, "live sessions give text"
