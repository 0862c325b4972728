"""The default model (Whisper tiny.en) is as accurate on every path as its own offline decode.

Over the English clips of ../shared/audio, each path's WER is within one point of the engine decoding the same
files in-process: one-shot and SSE through the official openai SDK, /v1/realtime, Deepgram live with interim
results, and the managed /ws/transcribe with interim results (both the protocols' streaming defaults).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import numpy as np
import pytest
from openai import AsyncOpenAI

from earshot.audio.decode import decode_audio
from earshot.engines.base import Engine, TranscribeOptions, transcribe
from tests.conftest import ENGLISH_CLIPS, Clip, RunningServer, start_server, stop_server
from tests.e2e.live_paths import deepgram_session, managed_session, realtime_session
from tests.e2e.wer import LiveTranscribe, clip_then_silence, transcribe_all_live, word_error_rate

MAX_POINTS_OVER_OFFLINE = 1.0


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    if not ENGLISH_CLIPS:
        pytest.skip("../shared/audio is absent (it sits beside the repo)")
    server = start_server(tmp_path_factory.mktemp("default-quality"))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
async def offline_wer(default_engine: Engine) -> AsyncIterator[float]:
    """The default engine's own WER, decoding each clip file in-process."""
    assert default_engine.name == "whisper-tiny.en"
    texts = [
        (await transcribe(default_engine, decode_audio(clip.path.read_bytes()), TranscribeOptions())).text
        for clip in ENGLISH_CLIPS
    ]
    yield word_error_rate(ENGLISH_CLIPS, texts)


def check(label: str, texts: list[str], offline: float) -> None:
    wer = word_error_rate(ENGLISH_CLIPS, texts)
    print(f"\nWER over {len(ENGLISH_CLIPS)} clips: offline engine {offline:.2f}, {label} {wer:.2f}")
    assert wer <= offline + MAX_POINTS_OVER_OFFLINE, label
    assert sum(bool(text) for text in texts) >= len(ENGLISH_CLIPS) * 0.8, f"{label} gives text"


def of_clip(session: Callable[[str, np.ndarray], Awaitable[str]]) -> LiveTranscribe:
    """A live path fed a clip followed by a second of silence."""

    async def live(url: str, clip: Clip) -> str:
        return await session(url, clip_then_silence(clip))

    return live


def sdk(server: RunningServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


async def test_one_shot_through_the_openai_sdk(default_server: RunningServer, offline_wer: float) -> None:
    client = sdk(default_server)

    async def one(url: str, clip: Clip) -> str:
        file = (clip.path.name, clip.path.read_bytes())
        return (await client.audio.transcriptions.create(model="whisper-1", file=file)).text

    check("one-shot", await transcribe_all_live("", ENGLISH_CLIPS, one), offline_wer)


async def test_sse_through_the_openai_sdk(default_server: RunningServer, offline_wer: float) -> None:
    client = sdk(default_server)

    async def one(url: str, clip: Clip) -> str:
        file = (clip.path.name, clip.path.read_bytes())
        stream = await client.audio.transcriptions.create(model="gpt-4o-transcribe", file=file, stream=True)
        deltas, done = [], None
        async for event in stream:
            if event.type == "transcript.text.delta":
                deltas.append(event.delta)
            elif event.type == "transcript.text.done":
                done = event.text
        assert done is not None and "".join(deltas).split() == done.split()
        return done

    check("SSE", await transcribe_all_live("", ENGLISH_CLIPS, one), offline_wer)


async def test_realtime(default_server: RunningServer, offline_wer: float) -> None:
    url = default_server.base_url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    check(
        "/v1/realtime", await transcribe_all_live(url, ENGLISH_CLIPS, of_clip(realtime_session)), offline_wer
    )


async def test_deepgram_live_with_interim_results(default_server: RunningServer, offline_wer: float) -> None:
    url = (
        default_server.base_url.replace("http://", "ws://")
        + "/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000&interim_results=true"
    )
    check(
        "Deepgram live", await transcribe_all_live(url, ENGLISH_CLIPS, of_clip(deepgram_session)), offline_wer
    )


async def test_managed_socket_with_interim_results(default_server: RunningServer, offline_wer: float) -> None:
    url = default_server.base_url.replace("http://", "ws://") + "/ws/transcribe"
    check(
        "/ws/transcribe", await transcribe_all_live(url, ENGLISH_CLIPS, of_clip(managed_session)), offline_wer
    )
