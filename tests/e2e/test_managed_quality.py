"""Transcripts over /ws/transcribe are as good as one-shot ones: WER over the English clips within 0.5."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator

import pytest
import websockets

from earshot.audio.pcm import float_to_pcm16
from tests.conftest import Clip, RunningServer, start_server, stop_server
from tests.e2e.wer import assert_live_wer_near_one_shot, clip_then_silence

FRAME_BYTES = 3200  # 100 ms at 16 kHz
# Finals from whole-phrase decodes, as /v1/realtime's. With EARSHOT_TEST_MANAGED_INTERIM=true the finals
# come through the interim-results path (the protocol's default) instead: slower, same bound.
INTERIM_RESULTS = os.environ.get("EARSHOT_TEST_MANAGED_INTERIM", "false") == "true"


@pytest.fixture(scope="module")
def quality_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("managed-quality"))
    try:
        yield server
    finally:
        stop_server(server)


async def live(url: str, clip: Clip) -> str:
    """The finals of a session that streams the clip and a second of silence, then asks to close."""
    pcm = float_to_pcm16(clip_then_silence(clip))
    config = {"sample_rate": 16000, "interim_results": INTERIM_RESULTS}
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "auth", "token": "", "config": config}))
        assert json.loads(await ws.recv())["type"] == "ready"
        for offset in range(0, len(pcm), FRAME_BYTES):
            await ws.send(pcm[offset : offset + FRAME_BYTES])
        # `close` flushes the open turn: every final arrives before session_end.
        await ws.send(json.dumps({"type": "close"}))
        finals: list[str] = []
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if message["type"] == "transcript" and message["is_final"]:
                finals.append(message["text"])
            elif message["type"] == "session_end":
                assert message["seconds_used"] == round(len(pcm) / 32_000, 3)
                return " ".join(finals)
            else:
                assert message["type"] in ("transcript", "utterance_end"), message


def test_managed_word_error_rate_is_within_half_a_point_of_one_shot(quality_server: RunningServer) -> None:
    url = quality_server.base_url.replace("http://", "ws://") + "/ws/transcribe"
    label = f"/ws/transcribe (interim results {INTERIM_RESULTS})"
    assert_live_wer_near_one_shot(quality_server, url, live, label)
