"""faster-whisper for real: a tiny random-weight Whisper, built here, loaded in worker processes.

Its text is meaningless, so these check what does not depend on it: segment and word times, the live
stream's flow of results, and the HTTP answer's shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
from openai import AsyncOpenAI

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.base import Engine, Segment, TranscribeOptions
from earshot.engines.results import EngineResult, Final, Flushed, Partial
from earshot.engines.spec import ModelSpec
from earshot.engines.workers import WorkerPool
from earshot.routing.router import build_engine
from tests.conftest import RunningServer, shared_audio, start_server, stop_server
from tests.e2e.realtime_client import EventLog, chunks, collect, commit_manually, pcm24, speech
from tests.tiny_whisper import tiny_whisper_model

# Quick and deterministic on random weights: greedy, one temperature, a few tokens per window, and no
# segment dropped as silence (random weights think everything is).
FAST_OPTIONS = {
    "beam_size": 1,
    "temperature": [0.0],
    "max_new_tokens": 8,
    "no_speech_threshold": None,
    "condition_on_previous_text": False,
}
CLIP = "pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0890.wav"


@pytest.fixture(scope="module")
def clip() -> Audio:
    return decode_audio(shared_audio(CLIP).read_bytes())


@pytest.fixture(scope="module")
async def whisper() -> AsyncIterator[Engine]:
    pool = WorkerPool(2)
    spec = ModelSpec(engine="faster_whisper", options={"model": str(tiny_whisper_model()), **FAST_OPTIONS})
    engine = build_engine("tiny", spec, pool)
    await engine.start()
    yield engine
    await engine.stop()
    pool.shutdown()


def _assert_sane(segments: list[Segment], duration_s: float) -> None:
    assert segments
    previous_end = 0.0
    for segment in segments:
        assert previous_end <= segment.start <= segment.end <= duration_s
        assert segment.text
        previous_end = segment.end


async def test_the_model_loads_in_every_worker_and_transcribes(whisper: Engine, clip: Audio) -> None:
    assert whisper.ready
    segments = [s async for s in whisper.transcribe_segments(clip, TranscribeOptions(language="en"))]
    _assert_sane(segments, clip.duration_s)
    assert all(not segment.words for segment in segments)


async def test_word_timestamps_lie_inside_their_segments(whisper: Engine, clip: Audio) -> None:
    options = TranscribeOptions(word_timestamps=True)
    segments = [s async for s in whisper.transcribe_segments(clip, options)]
    _assert_sane(segments, clip.duration_s)
    words = [word for segment in segments for word in segment.words]
    assert words
    for segment in segments:
        for word in segment.words:
            assert segment.start <= word.start <= word.end <= segment.end
            assert 0.0 <= word.confidence <= 1.0 and word.word == word.word.strip()


async def test_empty_audio_has_no_segments_and_silence_stays_inside(whisper: Engine) -> None:
    empty = Audio(np.zeros(0, dtype=np.float32))
    assert [s async for s in whisper.transcribe_segments(empty, TranscribeOptions())] == []
    quiet = Audio(np.zeros(2 * ENGINE_RATE_HZ, dtype=np.float32))
    segments = [s async for s in whisper.transcribe_segments(quiet, TranscribeOptions())]
    assert all(0.0 <= s.start <= s.end <= 2.0 for s in segments)


async def _until_flushed(results: AsyncIterator[EngineResult]) -> list[EngineResult]:
    collected: list[EngineResult] = []
    async for result in results:
        collected.append(result)
        if isinstance(result, Flushed):
            break
    return collected


async def test_a_live_stream_gives_partials_finals_and_one_flushed_per_finalize(
    whisper: Engine, clip: Audio
) -> None:
    stream = whisper.open_stream(TranscribeOptions())
    results = stream.results()
    chunk_s = 0.25
    t = 0.0
    while t < clip.duration_s:
        await stream.send(clip.slice(t, min(t + chunk_s, clip.duration_s)))
        t += chunk_s
        await asyncio.sleep(chunk_s / 4)  # four times real time, so re-decodes happen while audio comes
    await stream.finalize()
    first = await _until_flushed(results)
    assert any(isinstance(r, Partial) for r in first)
    finals = [r for r in first if isinstance(r, Final)]
    assert finals and isinstance(first[-1], Flushed)
    assert sum(isinstance(r, Flushed) for r in first) == 1
    for final in finals:
        assert 0.0 <= final.start <= final.end <= clip.duration_s + 1e-6
        assert final.words and final.text == " ".join(word.word for word in final.words)

    # A second turn: its times go on from the first, and the flush after it is the only one.
    await stream.send(clip.slice(0.0, 2.0))
    await stream.finalize()
    second = await _until_flushed(results)
    assert sum(isinstance(r, Flushed) for r in second) == 1
    for final in (r for r in second if isinstance(r, Final)):
        assert clip.duration_s - 1e-6 <= final.start <= final.end <= clip.duration_s + 2.0 + 1e-6

    await stream.close()
    rest = [r async for r in results]
    assert rest.count(Flushed()) == 1 and rest[-1] == Flushed()


async def test_without_interim_results_a_stream_gives_finals_only(whisper: Engine, clip: Audio) -> None:
    stream = whisper.open_stream(TranscribeOptions(interim_results=False))
    results = stream.results()
    for t in range(0, 5):
        await stream.send(clip.slice(t, t + 1))
        await asyncio.sleep(0.05)
    await stream.finalize()
    flushed = await _until_flushed(results)
    assert not any(isinstance(r, Partial) for r in flushed)
    assert [type(r) for r in flushed][-2:] == [Final, Flushed]
    await stream.close()
    assert [r async for r in results] == [Flushed()]


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("faster-whisper")
    config = tmp / "earshot.yaml"
    options = "\n".join(f"      {key}: {_yaml(value)}" for key, value in FAST_OPTIONS.items())
    config.write_text(
        f"models:\n  tiny-whisper:\n    engine: faster_whisper\n    options:\n"
        f"      model: {tiny_whisper_model()}\n{options}\n"
    )
    running = start_server(tmp, {"EARSHOT_CONFIG": str(config)})
    yield running
    stop_server(running)


def _yaml(value: object) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def test_the_openai_sdk_gets_json_and_verbose_json(tiny_server: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{tiny_server.base_url}/v1", api_key="unused", max_retries=0)
    path = Path(shared_audio(CLIP))
    with path.open("rb") as f:
        plain = client.audio.transcriptions.create(model="tiny-whisper", file=f)
    assert isinstance(plain.text, str) and plain.text
    with path.open("rb") as f:
        verbose = client.audio.transcriptions.create(
            model="tiny-whisper", file=f, response_format="verbose_json", timestamp_granularities=["word"]
        )
    assert verbose.language == "english"
    assert verbose.duration == pytest.approx(5.3, abs=0.05)
    assert verbose.words and all(0 <= w.start <= w.end <= verbose.duration for w in verbose.words)
    with path.open("rb") as f:
        german = client.audio.transcriptions.create(
            model="tiny-whisper", file=f, language="de", response_format="verbose_json"
        )
    assert german.language == "german", "a multilingual model decodes the language asked for"


async def test_a_realtime_session_completes_a_committed_turn(tiny_server: RunningServer) -> None:
    audio = pcm24(speech(CLIP))
    log = EventLog()
    client = AsyncOpenAI(base_url=f"{tiny_server.base_url}/v1", api_key="unused", max_retries=0)
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        await connection.recv()
        await commit_manually(connection, chunks(audio, 48_000, 100))
        await collect(connection, log, until_completed=1, timeout_s=30, stop_on_error=True)
    assert not log.of("error")
    completed = log.completed[0]
    assert completed["transcript"] and "".join(log.deltas(completed["item_id"])) == completed["transcript"]
