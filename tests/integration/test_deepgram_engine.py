"""The Deepgram engine against a fake Deepgram speaking its REST and live protocols, faults included."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import websockets
from websockets.typing import Subprotocol

from earshot.api.credentials import redact_server_logs
from earshot.audio.decode import decode_audio
from earshot.audio.pcm import Audio
from earshot.engines.base import EngineStream, TranscribeOptions, UpstreamError, transcribe
from earshot.engines.deepgram import DeepgramEngine, build
from earshot.engines.results import EngineResult, Final, Flushed, Partial
from earshot.engines.spec import ModelSpec
from tests.conftest import free_port, shared_audio
from tests.fakes.deepgram import DeepgramFake
from tests.fakes.server import FakeServer, serving

KEY = "dg-secret-key-123"
CLIP = "pocketsphinx-testdata/goforward.wav"
SCRIPT = "Go forward ten meters."


@pytest.fixture(autouse=True)
def server_log_setup() -> None:
    """Log levels as a running server sets them (httpx's URL lines kept out of INFO)."""
    redact_server_logs()


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[DeepgramFake, FakeServer]]:
    fake = DeepgramFake(api_key=KEY, script=SCRIPT)
    with serving(fake.app) as server:
        yield fake, server


@pytest.fixture
def deepgram(served: tuple[DeepgramFake, FakeServer]) -> Iterator[DeepgramFake]:
    """The module's fake Deepgram, with no faults and default behaviour; `base_url` is where it listens."""
    fake, server = served
    fake.faults.reset()
    fake.seconds_per_word = None
    fake.idle_timeout_s = 10.0
    fake.requests.clear()
    fake.live_logs.clear()
    fake.base_url = server.base_url
    yield fake
    fake.faults.reset()


@pytest.fixture
def clip() -> Audio:
    return decode_audio(shared_audio(CLIP).read_bytes())


async def started_engine(
    monkeypatch: pytest.MonkeyPatch, base_url: str, key: str = KEY, **fields: Any
) -> DeepgramEngine:
    """A started nova-3 engine for `base_url`, reading its key from a variable only these tests set."""
    monkeypatch.setenv("DG_TEST_KEY", key)
    spec = ModelSpec(
        engine="deepgram", base_url=base_url, api_key_env="DG_TEST_KEY", upstream_model="nova-3", **fields
    )
    engine: DeepgramEngine = build("dg", spec, pool=None)  # type: ignore[arg-type]  # needs no worker pool
    await engine.start()
    return engine


async def stream_through(
    stream: EngineStream, audio: Audio, chunk_s: float = 0.1, pace_s: float = 0.0
) -> list[EngineResult]:
    """Send audio in chunks, finalize, close; every result the stream gave."""
    results: list[EngineResult] = []

    async def collect() -> None:
        async for result in stream.results():
            results.append(result)

    collector = asyncio.create_task(collect())
    step = round(chunk_s * 16000)
    try:
        for at in range(0, len(audio.samples), step):
            await stream.send(Audio(audio.samples[at : at + step]))
            if pace_s:
                await asyncio.sleep(pace_s)
        await stream.finalize()
    except UpstreamError:
        await stream.close()
        with contextlib.suppress(UpstreamError):
            await collector
        raise
    await stream.close()
    await asyncio.wait_for(collector, 10)
    return results


def finals_text(results: list[EngineResult]) -> str:
    return " ".join(r.text for r in results if isinstance(r, Final))


async def test_one_shot_is_the_prerecorded_transcript_with_word_times(
    deepgram: DeepgramFake,
    clip: Audio,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = await started_engine(
        monkeypatch, deepgram.base_url, options={"smart_format": True, "language": "en-US"}
    )
    try:
        transcript = await transcribe(engine, clip, TranscribeOptions())
    finally:
        await engine.stop()
    assert transcript.text == SCRIPT
    assert [w.word for w in transcript.words] == SCRIPT.split()
    assert transcript.words[-1].end == pytest.approx(clip.duration_s, abs=0.01)
    request = deepgram.requests[-1]
    assert request["authorization"] == f"Token {KEY}"
    assert request["params"]["model"] == "nova-3"
    assert request["params"]["smart_format"] == "true"
    assert request["params"]["language"] == "en-US"


async def test_the_callers_language_wins_over_the_catalogs(
    deepgram: DeepgramFake,
    clip: Audio,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = await started_engine(monkeypatch, deepgram.base_url, options={"language": "en-US"})
    try:
        await transcribe(engine, clip, TranscribeOptions(language="de"))
    finally:
        await engine.stop()
    assert deepgram.requests[-1]["params"]["language"] == "de"


@pytest.mark.parametrize(
    ("status", "transient", "retry_after"),
    [
        (401, False, None),
        (400, False, None),
        (402, False, None),
        (429, True, 7.0),
        (500, True, None),
        (503, True, None),
    ],
)
async def test_rest_errors_become_upstream_errors_without_leaks(
    deepgram: DeepgramFake,
    clip: Audio,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    status: int,
    transient: bool,
    retry_after: float | None,
) -> None:
    deepgram.faults.fail_next(status, retry_after_s=retry_after)
    engine = await started_engine(monkeypatch, deepgram.base_url)
    caplog.set_level(logging.INFO)
    try:
        with pytest.raises(UpstreamError) as raised:
            await transcribe(engine, clip, TranscribeOptions())
    finally:
        await engine.stop()
    error = raised.value
    assert (error.status, error.transient, error.retry_after_s) == (status, transient, retry_after)
    assert "ref " in str(error)
    for text in (str(error), caplog.text):
        assert KEY not in text
        assert "127.0.0.1" not in text
        assert "err_msg" not in text and "Invalid credentials" not in text


async def test_a_wrong_key_is_refused_and_not_transient(
    deepgram: DeepgramFake,
    clip: Audio,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = await started_engine(monkeypatch, deepgram.base_url, key="wrong-key")
    try:
        with pytest.raises(UpstreamError) as raised:
            await transcribe(engine, clip, TranscribeOptions())
    finally:
        await engine.stop()
    assert raised.value.status == 401
    assert not raised.value.transient
    assert "credentials" in str(raised.value)


async def test_a_slow_reply_times_out_transiently(
    deepgram: DeepgramFake,
    clip: Audio,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deepgram.faults.delay_s = 2.0
    engine = await started_engine(monkeypatch, deepgram.base_url, timeout_s=0.5)
    try:
        with pytest.raises(UpstreamError) as raised:
            await transcribe(engine, clip, TranscribeOptions())
    finally:
        await engine.stop()
    assert raised.value.transient
    assert raised.value.status == 504


async def test_an_unreachable_provider_is_transient(clip: Audio, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = await started_engine(monkeypatch, f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(UpstreamError) as raised:
            await transcribe(engine, clip, TranscribeOptions())
        with pytest.raises(UpstreamError) as raised_live:
            await engine.open_stream(TranscribeOptions()).send(clip)
    finally:
        await engine.stop()
    assert raised.value.transient and raised.value.status == 502
    assert raised_live.value.transient


async def test_live_finals_carry_the_words_then_one_flushed_per_finalize(
    deepgram: DeepgramFake,
    clip: Audio,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deepgram.seconds_per_word = (clip.duration_s - 0.05) / len(SCRIPT.split())
    engine = await started_engine(monkeypatch, deepgram.base_url)
    results = await stream_through(engine.open_stream(TranscribeOptions(interim_results=True)), clip)
    await engine.stop()
    assert finals_text(results) == SCRIPT
    assert isinstance(results[-1], Flushed)
    assert sum(isinstance(r, Flushed) for r in results) == 1
    assert any(isinstance(r, Partial) for r in results)
    final_words = [w for r in results if isinstance(r, Final) for w in r.words]
    assert [w.word for w in final_words] == SCRIPT.split()
    assert all(0 <= w.start < w.end <= clip.duration_s + 0.01 for w in final_words)
    log = deepgram.live_logs[-1]
    params = log.params
    assert (params["encoding"], params["sample_rate"], params["channels"]) == ("linear16", "16000", "1")
    assert params["interim_results"] == "true"
    assert log.controls[-2:] == ["Finalize", "CloseStream"]
    assert log.audio_s == pytest.approx(clip.duration_s, abs=0.01)
    assert log.close_code == 1000


async def test_without_interim_results_no_partials_arrive(
    deepgram: DeepgramFake,
    clip: Audio,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = await started_engine(monkeypatch, deepgram.base_url)
    results = await stream_through(engine.open_stream(TranscribeOptions(interim_results=False)), clip)
    await engine.stop()
    assert not any(isinstance(r, Partial) for r in results)
    assert deepgram.live_logs[-1].params["interim_results"] == "false"


async def test_finalize_with_nothing_new_flushes_at_once(
    deepgram: DeepgramFake,
    clip: Audio,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = await started_engine(monkeypatch, deepgram.base_url)
    stream = engine.open_stream(TranscribeOptions(interim_results=False))
    results: list[EngineResult] = []

    async def collect() -> None:
        async for result in stream.results():
            results.append(result)

    collector = asyncio.create_task(collect())
    await stream.send(clip)
    await stream.finalize()
    await stream.finalize()  # nothing was sent since: Deepgram would say nothing, the engine must not wait
    await stream.close()
    await asyncio.wait_for(collector, 5)
    await engine.stop()
    assert [type(r) for r in results if not isinstance(r, Final)] == [Flushed, Flushed]
    assert deepgram.live_logs[-1].controls.count("Finalize") == 1


async def test_keepalives_hold_an_idle_stream_open(
    deepgram: DeepgramFake,
    clip: Audio,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deepgram.idle_timeout_s = 0.6
    engine = await started_engine(monkeypatch, deepgram.base_url, options={"keepalive_s": 0.2})
    stream = engine.open_stream(TranscribeOptions(interim_results=False))
    await stream.send(clip.slice(0, 1.0))
    await asyncio.sleep(1.5)  # idle well past the fake's timeout
    results = await stream_through(stream, clip.slice(1.0, clip.duration_s))
    await engine.stop()
    assert "KeepAlive" in deepgram.live_logs[-1].controls
    assert deepgram.live_logs[-1].close_code == 1000
    assert isinstance(results[-1], Flushed)


async def test_an_idle_stream_without_keepalives_is_closed_by_deepgram(
    deepgram: DeepgramFake,
    clip: Audio,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deepgram.idle_timeout_s = 0.4
    engine = await started_engine(monkeypatch, deepgram.base_url, options={"keepalive_s": 60})
    stream = engine.open_stream(TranscribeOptions())
    await stream.send(clip.slice(0, 0.5))
    with pytest.raises(UpstreamError) as raised:
        async for _ in stream.results():
            pass
    await stream.close()
    await engine.stop()
    assert raised.value.transient
    assert deepgram.live_logs[-1].close_code == 1011


async def test_a_1011_close_mid_stream_fails_the_stream_transiently(
    deepgram: DeepgramFake,
    clip: Audio,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    deepgram.faults.close_1011_after_s = 0.3
    engine = await started_engine(monkeypatch, deepgram.base_url)
    caplog.set_level(logging.INFO)
    with pytest.raises(UpstreamError) as raised:
        await stream_through(engine.open_stream(TranscribeOptions()), clip, pace_s=0.05)
    await engine.stop()
    assert raised.value.transient
    assert "fake: internal error" not in str(raised.value) and "127.0.0.1" not in caplog.text


@pytest.mark.parametrize(("status", "transient"), [(401, False), (429, True), (503, True)])
async def test_a_refused_live_handshake_is_an_upstream_error(
    deepgram: DeepgramFake,
    clip: Audio,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    transient: bool,
) -> None:
    deepgram.faults.fail_next(status)
    engine = await started_engine(monkeypatch, deepgram.base_url)
    stream = engine.open_stream(TranscribeOptions())
    with pytest.raises(UpstreamError) as raised:
        await stream.send(clip)
    await engine.stop()
    assert (raised.value.status, raised.value.transient) == (status, transient)
    assert KEY not in str(raised.value)


async def test_the_fake_speaks_deepgrams_live_protocol_to_a_browser_style_client(
    deepgram: DeepgramFake, clip: Audio
) -> None:
    """Subprotocol auth, final Results, UtteranceEnd after quiet audio, Metadata on CloseStream."""
    url = deepgram.base_url.replace("http", "ws") + "/v1/listen?encoding=linear16&sample_rate=16000"
    url += "&interim_results=true&utterance_end_ms=1000"
    quiet = Audio(np.zeros(8000, dtype=np.float32))
    async with websockets.connect(url, subprotocols=[Subprotocol("token"), Subprotocol(KEY)]) as ws:
        assert ws.subprotocol == "token"
        await ws.send(clip.pcm16() + quiet.pcm16())
        await ws.send(json.dumps({"type": "CloseStream"}))
        messages = [json.loads(raw) async for raw in ws]
    kinds = [m["type"] for m in messages]
    assert kinds[-1] == "Metadata" and "UtteranceEnd" in kinds
    finals = [m for m in messages if m["type"] == "Results" and m["is_final"]]
    assert finals and all({"speech_final", "from_finalize", "start", "duration"} <= set(m) for m in finals)
    assert messages[-1]["duration"] == pytest.approx(clip.duration_s + 0.5, abs=0.01)
