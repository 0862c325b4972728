"""The Sarvam engine against a fake Sarvam: one-shot, long files cut at pauses and stitched, streams."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from earshot.api.credentials import redact_server_logs
from earshot.audio.decode import decode_audio
from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.base import TranscribeOptions, UpstreamError, transcribe
from earshot.engines.results import EngineResult, Final, Flushed, Partial
from earshot.engines.sarvam import SarvamEngine, build
from earshot.engines.spec import ModelSpec
from tests.conftest import ENGLISH_CLIPS, SHARED_AUDIO, free_port, shared_audio
from tests.fakes.sarvam import SarvamFake
from tests.fakes.server import FakeServer, serving

KEY = "sarvam-secret-key-456"
CLIP = "pocketsphinx-testdata/goforward.wav"
GAP_S = 0.8


@pytest.fixture(autouse=True)
def server_log_setup() -> None:
    """Log levels as a running server sets them (httpx's URL lines kept out of INFO)."""
    redact_server_logs()


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[SarvamFake, FakeServer]]:
    fake = SarvamFake(api_key=KEY, script="go forward ten meters")
    with serving(fake.app) as server:
        yield fake, server


@pytest.fixture
def sarvam(served: tuple[SarvamFake, FakeServer]) -> Iterator[SarvamFake]:
    """The module's fake Sarvam reading out a fixed script, no faults; `base_url` is where it listens."""
    fake, server = served
    fake.faults.reset()
    fake.requests.clear()
    fake.most_in_flight = 0
    fake.transcriber = lambda _pcm, _rate: "go forward ten meters"
    fake.base_url = server.base_url
    yield fake
    fake.faults.reset()


def make_engine(base_url: str, key: str = KEY, **fields: Any) -> SarvamEngine:
    os.environ["SARVAM_TEST_KEY"] = key  # a variable only these tests read
    spec = ModelSpec(engine="sarvam", base_url=base_url, api_key_env="SARVAM_TEST_KEY", **fields)
    return build("sarvam", spec, pool=None)  # type: ignore[arg-type]  # Sarvam needs no worker pool


async def started(engine: SarvamEngine) -> SarvamEngine:
    await engine.start()
    return engine


def long_file() -> tuple[Audio, list[tuple[int, int, str]]]:
    """Recorded clips with GAP_S pauses between them, over 30 s: the audio and (start, end, text) per clip."""
    samples: list[np.ndarray] = []
    clips: list[tuple[int, int, str]] = []
    at = 0
    for clip in ENGLISH_CLIPS:
        if clip.duration_s > 8 or not str(clip.path).endswith(".wav"):
            continue
        audio = decode_audio(shared_audio(str(clip.path.relative_to(SHARED_AUDIO))).read_bytes())
        samples += [audio.samples, np.zeros(round(GAP_S * ENGINE_RATE_HZ), dtype=np.float32)]
        clips.append((at, at + len(audio.samples), clip.transcript))
        at += len(audio.samples) + round(GAP_S * ENGINE_RATE_HZ)
        if at > 45 * ENGINE_RATE_HZ:
            break
    return Audio(np.concatenate(samples)), clips


async def test_one_shot_sends_the_file_with_model_and_language(sarvam: SarvamFake) -> None:
    audio = decode_audio(shared_audio(CLIP).read_bytes())
    engine = await started(make_engine(sarvam.base_url, upstream_model="saarika:v2.5"))
    try:
        transcript = await transcribe(engine, audio, TranscribeOptions(language="hi"))
    finally:
        await engine.stop()
    assert transcript.text == "go forward ten meters"
    assert transcript.segments[0].end == pytest.approx(audio.duration_s, abs=0.01)
    request = sarvam.requests[-1]
    assert (request["model"], request["language_code"], request["with_timestamps"]) == (
        "saarika:v2.5",
        "hi-IN",
        "true",
    )


async def test_a_long_file_is_cut_at_pauses_into_pieces_and_stitched_in_order(sarvam: SarvamFake) -> None:
    audio, clips = long_file()
    assert audio.duration_s > 30
    full = audio.pcm16()

    def transcribe_piece(pcm: bytes, rate: int) -> str:
        """Which clips the piece holds, found by where its samples sit in the whole file."""
        at = full.find(pcm) // 2
        assert at >= 0 and rate == ENGINE_RATE_HZ
        end = at + len(pcm) // 2
        texts = []
        for start, stop, text in clips:
            if at <= start and stop <= end:
                texts.append(text)
            elif start < end and stop > at:
                texts.append("<clip cut in two>")
        return " ".join(texts)

    sarvam.transcriber = transcribe_piece
    engine = await started(make_engine(sarvam.base_url, options={"max_parallel": 2}))
    try:
        transcript = await transcribe(engine, audio, TranscribeOptions())
    finally:
        await engine.stop()
    assert transcript.text == " ".join(text for _, _, text in clips)
    assert len(sarvam.requests) >= 2
    assert all(request["duration_s"] <= 30.0 for request in sarvam.requests)
    assert sarvam.most_in_flight <= 2
    starts = [segment.start for segment in transcript.segments]
    assert starts == sorted(starts)
    assert transcript.segments[-1].end == pytest.approx(audio.duration_s, abs=0.05)


async def test_a_failing_piece_fails_the_whole_file(sarvam: SarvamFake) -> None:
    audio, _ = long_file()
    sarvam.faults.fail_next(500)
    engine = await started(make_engine(sarvam.base_url, options={"max_parallel": 1}))
    try:
        with pytest.raises(UpstreamError) as raised:
            await transcribe(engine, audio, TranscribeOptions())
    finally:
        await engine.stop()
    assert raised.value.transient and raised.value.status == 500


@pytest.mark.parametrize(
    ("status", "transient", "retry_after"),
    [(403, False, None), (400, False, None), (422, False, None), (429, True, 3.0), (503, True, None)],
)
async def test_rest_errors_become_upstream_errors_without_leaks(
    sarvam: SarvamFake,
    caplog: pytest.LogCaptureFixture,
    status: int,
    transient: bool,
    retry_after: float | None,
) -> None:
    audio = decode_audio(shared_audio(CLIP).read_bytes())
    sarvam.faults.fail_next(status, retry_after_s=retry_after)
    caplog.set_level(logging.INFO)
    engine = await started(make_engine(sarvam.base_url))
    try:
        with pytest.raises(UpstreamError) as raised:
            await transcribe(engine, audio, TranscribeOptions())
    finally:
        await engine.stop()
    error = raised.value
    assert (error.status, error.transient, error.retry_after_s) == (status, transient, retry_after)
    for text in (str(error), caplog.text):
        assert KEY not in text and "127.0.0.1" not in text and "_error" not in text


async def test_a_wrong_key_gets_sarvams_403_as_a_credentials_error(sarvam: SarvamFake) -> None:
    audio = decode_audio(shared_audio(CLIP).read_bytes())
    engine = await started(make_engine(sarvam.base_url, key="wrong"))
    try:
        with pytest.raises(UpstreamError) as raised:
            await transcribe(engine, audio, TranscribeOptions())
    finally:
        await engine.stop()
    assert (raised.value.status, raised.value.transient) == (403, False)
    assert "credentials" in str(raised.value)


async def test_slow_and_unreachable_upstreams_are_transient(sarvam: SarvamFake) -> None:
    audio = decode_audio(shared_audio(CLIP).read_bytes())
    sarvam.faults.delay_s = 2.0
    slow = await started(make_engine(sarvam.base_url, timeout_s=0.5))
    gone = await started(make_engine(f"http://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(UpstreamError) as timed_out:
            await transcribe(slow, audio, TranscribeOptions())
        with pytest.raises(UpstreamError) as unreachable:
            await transcribe(gone, audio, TranscribeOptions())
    finally:
        await slow.stop()
        await gone.stop()
    assert (timed_out.value.status, timed_out.value.transient) == (504, True)
    assert (unreachable.value.status, unreachable.value.transient) == (502, True)


async def test_a_stream_sends_one_request_per_finalized_phrase(sarvam: SarvamFake) -> None:
    audio = decode_audio(shared_audio(CLIP).read_bytes())
    engine = await started(make_engine(sarvam.base_url))
    stream = engine.open_stream(TranscribeOptions(interim_results=True))
    results: list[EngineResult] = []

    async def collect() -> None:
        async for result in stream.results():
            results.append(result)

    collector = asyncio.create_task(collect())
    for _phrase in range(2):
        for at in range(0, len(audio.samples), 1600):
            await stream.send(Audio(audio.samples[at : at + 1600]))
        await stream.finalize()
    await stream.close()
    await asyncio.wait_for(collector, 10)
    await engine.stop()
    assert [type(r) for r in results] == [Final, Flushed, Final, Flushed]
    assert not any(isinstance(r, Partial) for r in results)
    second = results[2]
    assert isinstance(second, Final) and second.start == pytest.approx(audio.duration_s, abs=0.01)
    assert len(sarvam.requests) == 2


async def test_a_stream_reports_a_failed_request_in_its_results(sarvam: SarvamFake) -> None:
    audio = decode_audio(shared_audio(CLIP).read_bytes())
    sarvam.faults.fail_next(503)
    engine = await started(make_engine(sarvam.base_url))
    stream = engine.open_stream(TranscribeOptions())
    await stream.send(audio)
    await stream.finalize()
    await stream.close()
    with pytest.raises(UpstreamError) as raised:
        async for _ in stream.results():
            pass
    await engine.stop()
    assert raised.value.transient
