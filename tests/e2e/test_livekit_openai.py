"""LiveKit Agents' OpenAI STT plugin against a real server: its defaults, only the base URL changed.

`livekit.plugins.openai.STT()` transcribes one-shot through `/v1/audio/transcriptions` and streams through
`/v1/realtime?intent=transcription&model=gpt-4o-mini-transcribe` (server VAD, 24 kHz PCM). It takes any
`error` event as fatal and reconnects a stream whose socket closes, so a quiet stream must simply stay open.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import RunningServer, one_shot_text, start_server, stop_server
from tests.e2e.realtime_client import pcm24, silence, speech
from tests.e2e.wer import words

lk_openai = pytest.importorskip(
    "livekit.plugins.openai", reason="livekit-plugins-openai is not installed (the `clients` extra)"
)
from livekit import rtc  # noqa: E402
from livekit.agents import stt as agents_stt  # noqa: E402
from livekit.agents.utils import http_context  # noqa: E402

# The model the plugin asks for when none is given.
LIVEKIT_MODEL = "gpt-4o-mini-transcribe"
GOFORWARD = "pocketsphinx-testdata/goforward.wav"
RATE_HZ = 24_000
FRAME_MS = 20
QUIET_S = 30.0
# A muted track sends no frames at all; longer than the keepalive that Deepgram's sessions have.
MUTED_S = 12.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with the default settings and catalog (Whisper tiny.en)."""
    running = start_server(tmp_path_factory.mktemp("livekit"))
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture
async def livekit_stt(server: RunningServer) -> AsyncIterator[Any]:
    """The plugin's STT with its defaults, outside a worker (an http context stands in for the job's)."""
    async with http_context.open():
        stt = lk_openai.STT(base_url=f"{server.base_url}/v1", api_key="anything")
        errors: list[Any] = []
        stt.on("error", errors.append)
        yield stt
        await stt.aclose()
        assert errors == [], "the plugin reported no error"


def frames(samples: np.ndarray) -> list[rtc.AudioFrame]:
    """16 kHz samples as 24 kHz mono frames of FRAME_MS, as a LiveKit audio track delivers them."""
    pcm = pcm24(samples)
    step = RATE_HZ * FRAME_MS // 1000 * 2
    pcm += b"\0" * (-len(pcm) % step)
    return [rtc.AudioFrame(pcm[i : i + step], RATE_HZ, 1, step // 2) for i in range(0, len(pcm), step)]


async def push_paced(stream: Any, audio: list[rtc.AudioFrame]) -> None:
    started = time.monotonic()
    for index, frame in enumerate(audio):
        stream.push_frame(frame)
        await asyncio.sleep(max(0.0, started + (index + 1) * FRAME_MS / 1000 - time.monotonic()))


def realtime_sessions_ended(server: RunningServer) -> float:
    metrics = httpx.get(f"{server.base_url}/metrics").text
    pattern = r'earshot_live_sessions_total\{[^}]*route="/v1/realtime"[^}]*\} (\S+)'
    return sum(float(value) for value in re.findall(pattern, metrics))


async def finals_of(stream: Any, count: int, timeout_s: float) -> list[str]:
    texts: list[str] = []

    async def read() -> None:
        async for event in stream:
            if event.type == agents_stt.SpeechEventType.FINAL_TRANSCRIPT:
                texts.append(event.alternatives[0].text)
                if len(texts) >= count:
                    return

    await asyncio.wait_for(read(), timeout_s)
    return texts


async def test_recognize_gives_the_clips_text(server: RunningServer, livekit_stt: Any) -> None:
    event = await livekit_stt.recognize(frames(speech(GOFORWARD)))
    assert event.type == agents_stt.SpeechEventType.FINAL_TRANSCRIPT
    assert words(event.alternatives[0].text) == words("go forward ten meters")
    assert words(event.alternatives[0].text) == words(one_shot_text(server, GOFORWARD, LIVEKIT_MODEL))


async def test_stream_gets_the_transcript_of_speech(server: RunningServer, livekit_stt: Any) -> None:
    stream = livekit_stt.stream()
    try:
        reading = asyncio.create_task(finals_of(stream, 1, timeout_s=30))
        await push_paced(stream, frames(np.concatenate([silence(0.5), speech(GOFORWARD), silence(1.5)])))
        texts = await reading
    finally:
        await stream.aclose()
    assert words(" ".join(texts)) == words(one_shot_text(server, GOFORWARD, LIVEKIT_MODEL))


async def test_a_stream_quiet_for_30_s_then_speaking_still_gets_its_transcript(
    server: RunningServer, livekit_stt: Any
) -> None:
    stream = livekit_stt.stream()
    try:
        reading = asyncio.create_task(finals_of(stream, 1, timeout_s=QUIET_S + MUTED_S + 30))
        # Connected and configured (the plugin connects on its first frame), then silence at real-time pace,
        # then a muted stretch with no frames at all, then speech.
        await push_paced(stream, frames(silence(1.0)))
        ended_before = realtime_sessions_ended(server)
        await push_paced(stream, frames(silence(QUIET_S - 1.0)))
        await asyncio.sleep(MUTED_S)
        assert not reading.done(), "nothing was said yet"
        await push_paced(stream, frames(np.concatenate([speech(GOFORWARD), silence(1.5)])))
        texts = await reading
        assert realtime_sessions_ended(server) == ended_before, "the plugin's session was never closed"
    finally:
        await stream.aclose()
    assert words(" ".join(texts)) == words(one_shot_text(server, GOFORWARD, LIVEKIT_MODEL))
