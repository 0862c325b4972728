"""Deepgram live transcripts are as good as one-shot ones: WER over the English clips within half a point."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import websockets

from earshot.audio.pcm import float_to_pcm16
from tests.conftest import Clip, RunningServer, start_server, stop_server
from tests.e2e.wer import assert_live_wer_near_one_shot, clip_then_silence

CHUNK_BYTES = 3200  # 100 ms of 16 kHz PCM16


@pytest.fixture(scope="module")
def quality_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("deepgram-quality"))
    try:
        yield server
    finally:
        stop_server(server)


async def live(url: str, clip: Clip) -> str:
    """The final Results of a stream of the clip and a second of silence, ended by CloseStream."""
    audio = float_to_pcm16(clip_then_silence(clip))
    finals: list[str] = []
    async with websockets.connect(url, max_size=None) as ws:
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


def test_live_word_error_rate_is_within_half_a_point_of_one_shot(quality_server: RunningServer) -> None:
    url = (
        quality_server.base_url.replace("http://", "ws://")
        + "/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000"
    )
    assert_live_wer_near_one_shot(quality_server, url, live, "Deepgram live")
