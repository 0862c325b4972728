"""Live sessions on provider models: /v1/realtime through a real server to fake WhisperLiveKit and Sarvam.

These check what a live caller notices: every turn completes (each finalize the session makes is answered,
for WhisperLiveKit by its progress catching up, as it has no flush of its own), every word arrives once and
in order, and nothing fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from openai import AsyncOpenAI

from tests.conftest import RunningServer, start_server, stop_server
from tests.e2e.catalogs import write_catalog
from tests.e2e.realtime_client import EventLog, chunks, pcm24, silence, speech, trimmed
from tests.fakes.sarvam import SarvamFake
from tests.fakes.server import serving
from tests.fakes.whisperlivekit import WhisperLiveKitFake

SENTENCES = [
    "pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
    "pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0890.wav",
]
SCRIPT = [f"word{i}" for i in range(14)]
SARVAM_KEY = "sarvam-live-e2e-key-5e1"
CHUNK_MS = 40


@dataclass
class Live:
    server: RunningServer
    whisperlivekit: WhisperLiveKitFake
    sarvam: SarvamFake


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp: Path = tmp_path_factory.mktemp("provider-live")
    wlk = WhisperLiveKitFake(script=" ".join(SCRIPT), seconds_per_word=0.6)
    sarvam = SarvamFake(api_key=SARVAM_KEY, script="namaste")
    with ExitStack() as stack:
        wlk_server = stack.enter_context(serving(wlk.app))
        sarvam_server = stack.enter_context(serving(sarvam.app))
        catalog = write_catalog(
            tmp / "catalog.yaml",
            {
                "wlk": {"engine": "whisperlivekit", "base_url": wlk_server.base_url},
                "sarvam": {"engine": "sarvam", "base_url": sarvam_server.base_url, "api_key_env": "E2E_SV"},
            },
        )
        server = start_server(tmp, {"EARSHOT_CONFIG": str(catalog), "E2E_SV": SARVAM_KEY})
        try:
            yield Live(server, wlk, sarvam)
        finally:
            stop_server(server)


def two_sentences() -> np.ndarray:
    parts = [trimmed(speech(path)) for path in SENTENCES]
    return np.concatenate([silence(0.5), parts[0], silence(1.2), parts[1], silence(2.0)])


async def stream_session(server: RunningServer, model: str, audio: np.ndarray) -> EventLog:
    """Stream audio at real-time pace over /v1/realtime; the events once every turn has ended."""
    sdk = AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
    log = EventLog()
    async with sdk.realtime.connect(extra_query={"intent": "transcription", "model": model}) as conn:

        async def read() -> None:
            async for event in conn:
                log.add(event.to_dict())

        reader = asyncio.create_task(read())
        for payload in chunks(pcm24(audio), 48_000, CHUNK_MS):
            await conn.input_audio_buffer.append(audio=payload)
            await asyncio.sleep(CHUNK_MS / 1000)
        async with asyncio.timeout(30):
            while True:
                stopped = log.of("input_audio_buffer.speech_stopped")
                ended = len(log.completed) + len(log.of("conversation.item.input_audio_transcription.failed"))
                if stopped and ended >= len(stopped):
                    break
                await asyncio.sleep(0.1)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return log


async def test_a_whisperlivekit_session_completes_every_turn_with_every_word_once(live: Live) -> None:
    log = await stream_session(live.server, "wlk", two_sentences())
    assert not log.of("error") and not log.of("conversation.item.input_audio_transcription.failed")
    assert len(log.completed) == len(log.of("input_audio_buffer.speech_stopped")) >= 2
    heard = " ".join(event["transcript"] for event in log.completed).split()
    assert heard == SCRIPT[: len(heard)] and len(heard) >= len(SCRIPT) - 2, heard
    assert all(event["transcript"] for event in log.completed), "each turn got the words spoken in it"
    connection = live.whisperlivekit.connections[-1]
    assert not connection.overflowed


async def test_a_sarvam_session_sends_each_phrase_once(live: Live) -> None:
    log = await stream_session(live.server, "sarvam", two_sentences())
    assert not log.of("error") and not log.of("conversation.item.input_audio_transcription.failed")
    assert len(log.completed) == len(log.of("input_audio_buffer.speech_stopped")) >= 2
    heard = " ".join(event["transcript"] for event in log.completed).split()
    assert heard == ["namaste"] * len(live.sarvam.requests)
    assert sum(request["duration_s"] for request in live.sarvam.requests) < 14.0  # speech, not the pauses
