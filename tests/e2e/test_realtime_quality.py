"""Live transcripts are as good as one-shot ones: WER over the English clips within half a point."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import websockets

from tests.conftest import Clip, RunningServer, start_server, stop_server
from tests.e2e.realtime_client import chunks, pcm24
from tests.e2e.wer import assert_live_wer_near_one_shot, clip_then_silence


@pytest.fixture(scope="module")
def quality_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("quality"))
    try:
        yield server
    finally:
        stop_server(server)


async def live(url: str, clip: Clip) -> str:
    """Every completed transcript of a session that streams the clip then a second of silence."""
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()
        for payload in chunks(pcm24(clip_then_silence(clip)), 48_000, 100):
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


def test_live_word_error_rate_is_within_half_a_point_of_one_shot(quality_server: RunningServer) -> None:
    url = quality_server.base_url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    assert_live_wer_near_one_shot(quality_server, url, live, "live")
