"""The openai, azure_openai and openai_compatible engines against the fake provider on a real socket."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines import azure_openai, openai, openai_compatible
from earshot.engines.base import (
    Engine,
    EngineError,
    EngineStream,
    TranscribeOptions,
    UpstreamError,
    transcribe,
)
from earshot.engines.openai_wire import OpenAIWireEngine, upstream_realtime_target
from earshot.engines.results import EngineResult, Final, Flushed, Partial
from earshot.engines.spec import CatalogError, ModelSpec
from earshot.engines.workers import WorkerPool
from tests.conftest import free_port
from tests.fakes.openai import AZURE_DEPLOYMENT, AZURE_KEY, OPENAI_KEY, SECRET_MARKER, FakeOpenAI
from tests.fakes.server import FakeServer, serving

TEXT = "the quick brown fox"


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeOpenAI, FakeServer]]:
    provider = FakeOpenAI(TEXT)
    with serving(provider.app) as server:
        yield provider, server


@pytest.fixture
def provider(fake: tuple[FakeOpenAI, FakeServer]) -> Iterator[FakeOpenAI]:
    """The fake, with its faults and records reset for each test."""
    fake_provider = fake[0]
    fake_provider.faults.__init__()  # type: ignore[misc]
    fake_provider.requests.clear()
    fake_provider.sockets.clear()
    yield fake_provider


@pytest.fixture
def base_url(fake: tuple[FakeOpenAI, FakeServer]) -> str:
    return fake[1].base_url


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", OPENAI_KEY)
    monkeypatch.setenv("TEST_AZURE_KEY", AZURE_KEY)
    monkeypatch.setenv("TEST_WRONG_KEY", "sk-wrong-key-0000")


def speech(seconds: float = 1.0) -> Audio:
    """A tone loud enough to count as speech."""
    t = np.arange(int(seconds * ENGINE_RATE_HZ)) / ENGINE_RATE_HZ
    return Audio((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


async def started(module: Any, **spec: Any) -> OpenAIWireEngine:
    engine: OpenAIWireEngine = module.build("test-model", ModelSpec(**spec), WorkerPool(1))
    await engine.start()
    return engine


def openai_spec(base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "engine": "openai",
        "base_url": f"{base_url}/v1",
        "api_key_env": "TEST_OPENAI_KEY",
        "upstream_model": "gpt-4o-transcribe",
        **extra,
    }


async def stream_results(stream: EngineStream, audio: Audio, pace_s: float = 0.0) -> list[EngineResult]:
    results: list[EngineResult] = []

    async def read() -> None:
        async for result in stream.results():
            results.append(result)

    reader = asyncio.create_task(read())
    try:
        for start in range(0, len(audio.samples), 1600):
            await stream.send(Audio(audio.samples[start : start + 1600]))
            await asyncio.sleep(pace_s)
        await stream.finalize()
        await stream.close()
    except BaseException:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        raise
    await asyncio.wait_for(reader, 10)
    return results


async def stream_error(stream: EngineStream, audio: Audio) -> UpstreamError:
    with pytest.raises(UpstreamError) as caught:
        async with asyncio.timeout(10):
            await stream_results(stream, audio)
    return caught.value


# --- openai: REST ---


async def test_openai_transcribes_with_segments_and_word_times(provider: FakeOpenAI, base_url: str) -> None:
    engine = await started(openai, **openai_spec(base_url))
    transcript = await transcribe(engine, speech(2.0), TranscribeOptions(language="en", word_timestamps=True))
    await engine.stop()
    assert transcript.text == TEXT
    assert [w.word for w in transcript.words] == TEXT.split()
    assert transcript.words[-1].end == pytest.approx(2.0, abs=0.01)
    sent = provider.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert sent.fields["model"] == ["gpt-4o-transcribe"]
    assert sent.fields["response_format"] == ["verbose_json"]
    assert sorted(sent.fields["timestamp_granularities[]"]) == ["segment", "word"]
    assert sent.fields["language"] == ["en"]


async def test_openai_json_only_models_give_one_segment(provider: FakeOpenAI, base_url: str) -> None:
    engine = await started(openai, **openai_spec(base_url, options={"response_format": "json"}))
    transcript = await transcribe(engine, speech(1.5), TranscribeOptions())
    await engine.stop()
    assert transcript.text == TEXT
    assert len(transcript.segments) == 1 and transcript.segments[0].end == pytest.approx(1.5)
    assert provider.requests[-1].fields["response_format"] == ["json"]


@pytest.mark.parametrize(("status", "transient"), [(500, True), (503, True), (429, True), (400, False)])
async def test_openai_failures_map_to_upstream_errors(
    provider: FakeOpenAI, base_url: str, status: int, transient: bool
) -> None:
    provider.faults.fail_next(status=status, retry_after_s=7)
    engine = await started(openai, **openai_spec(base_url))
    with pytest.raises(UpstreamError) as caught:
        await transcribe(engine, speech(), TranscribeOptions())
    await engine.stop()
    error = caught.value
    assert (error.status, error.transient) == (status, transient)
    assert error.retry_after_s == 7
    assert SECRET_MARKER not in str(error) and base_url not in str(error) and "ref " in str(error)


async def test_a_wrong_key_is_a_lasting_failure_that_names_no_key(
    provider: FakeOpenAI, base_url: str
) -> None:
    engine = await started(openai, **openai_spec(base_url, api_key_env="TEST_WRONG_KEY"))
    with pytest.raises(UpstreamError) as caught:
        await transcribe(engine, speech(), TranscribeOptions())
    await engine.stop()
    assert caught.value.status == 401 and not caught.value.transient
    assert "sk-wrong-key" not in str(caught.value) and SECRET_MARKER not in str(caught.value)


async def test_a_slow_reply_times_out_as_a_transient_failure(provider: FakeOpenAI, base_url: str) -> None:
    provider.faults.delay_s = 2.0
    engine = await started(openai, **openai_spec(base_url, timeout_s=0.3))
    with pytest.raises(UpstreamError) as caught:
        await transcribe(engine, speech(), TranscribeOptions())
    await engine.stop()
    assert caught.value.transient and caught.value.status == 504


async def test_an_unreachable_provider_is_transient() -> None:
    spec = openai_spec(f"http://127.0.0.1:{free_port()}", connect_timeout_s=1)
    engine = await started(openai, **spec)
    with pytest.raises(UpstreamError) as caught:
        await transcribe(engine, speech(), TranscribeOptions())
    await engine.stop()
    assert caught.value.transient and "127.0.0.1" not in str(caught.value)


def test_a_missing_key_variable_stops_the_catalog_with_its_name(base_url: str) -> None:
    with pytest.raises(CatalogError, match="NOT_SET_ANYWHERE"):
        openai.build("m", ModelSpec(**openai_spec(base_url, api_key_env="NOT_SET_ANYWHERE")), WorkerPool(1))


# --- openai: Realtime streaming ---


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_openai_streams_through_the_realtime_socket(
    provider: FakeOpenAI, base_url: str, dialect: str
) -> None:
    engine = await started(openai, **openai_spec(base_url, options={"realtime_dialect": dialect}))
    assert isinstance(engine, Engine)
    results = await stream_results(
        engine.open_stream(TranscribeOptions(language="en", interim_results=False)), speech(1.0)
    )
    await engine.stop()
    finals = [r for r in results if isinstance(r, Final)]
    assert [f.text for f in finals] == [TEXT]
    assert finals[0].start == 0.0 and finals[0].end == pytest.approx(1.0)
    assert isinstance(results[-1], Flushed) and isinstance(results[results.index(finals[0]) + 1], Flushed)
    assert not [r for r in results if isinstance(r, Partial)], "append-only deltas are not wanted here"
    socket = provider.sockets[-1]
    assert socket.dialect == dialect and socket.query["intent"] == "transcription"
    assert socket.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    update = socket.events[0]
    if dialect == "ga":
        assert update["type"] == "session.update"
        audio_input = update["session"]["audio"]["input"]
        assert audio_input["format"] == {"type": "audio/pcm", "rate": 24000}
        assert audio_input["turn_detection"] is None
        assert audio_input["transcription"]["model"] == "gpt-4o-transcribe"
    else:
        assert update["type"] == "transcription_session.update"
        assert update["session"]["input_audio_format"] == "pcm16"
        assert update["session"]["turn_detection"] is None
    assert socket.appended_bytes == pytest.approx(24_000 * 2, rel=0.02), "1 s as 24 kHz PCM16"
    assert len(socket.of("input_audio_buffer.commit")) == 1


async def test_streamed_deltas_become_partials_when_wanted(provider: FakeOpenAI, base_url: str) -> None:
    engine = await started(openai, **openai_spec(base_url))
    results = await stream_results(engine.open_stream(TranscribeOptions(interim_results=True)), speech())
    await engine.stop()
    partials = [r.text for r in results if isinstance(r, Partial)]
    assert partials == ["the", "the quick", "the quick brown", TEXT]


async def test_a_socket_closed_with_1011_mid_stream_is_transient(provider: FakeOpenAI, base_url: str) -> None:
    provider.faults.close_1011_after_s = 0.2
    provider.faults.delay_s = 1.0
    engine = await started(openai, **openai_spec(base_url))
    error = await stream_error(engine.open_stream(TranscribeOptions()), speech())
    await engine.stop()
    assert error.transient


@pytest.mark.parametrize(("status", "transient"), [(503, True), (429, True), (401, False)])
async def test_a_refused_socket_handshake_maps_by_status(
    provider: FakeOpenAI, base_url: str, status: int, transient: bool
) -> None:
    spec = openai_spec(base_url, api_key_env="TEST_WRONG_KEY") if status == 401 else openai_spec(base_url)
    if status != 401:
        provider.faults.fail_next(status=status)
    engine = await started(openai, **spec)
    error = await stream_error(engine.open_stream(TranscribeOptions()), speech())
    await engine.stop()
    assert (error.status, error.transient) == (status, transient)
    assert SECRET_MARKER not in str(error)


async def test_a_transcript_that_never_comes_times_out(provider: FakeOpenAI, base_url: str) -> None:
    provider.faults.delay_s = 3.0
    engine = await started(openai, **openai_spec(base_url, timeout_s=0.3))
    error = await stream_error(engine.open_stream(TranscribeOptions()), speech())
    await engine.stop()
    assert error.transient and error.status == 504


# --- azure_openai ---


def azure_spec(base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "engine": "azure_openai",
        "base_url": base_url,
        "api_key_env": "TEST_AZURE_KEY",
        "options": {"deployment": AZURE_DEPLOYMENT, "api_version": "2024-06-01"},
        **extra,
    }


async def test_azure_uses_the_deployment_url_api_version_and_api_key(
    provider: FakeOpenAI, base_url: str
) -> None:
    engine = await started(azure_openai, **azure_spec(base_url))
    transcript = await transcribe(engine, speech(), TranscribeOptions(word_timestamps=True))
    await engine.stop()
    assert transcript.text == TEXT and len(transcript.words) == 4
    sent = provider.requests[-1]
    assert sent.path == f"/openai/deployments/{AZURE_DEPLOYMENT}/audio/transcriptions"
    assert sent.query == {"api-version": "2024-06-01"}
    assert sent.headers["api-key"] == AZURE_KEY and "authorization" not in sent.headers
    assert "model" not in sent.fields


async def test_azure_wrong_key_is_lasting_and_hides_the_body(provider: FakeOpenAI, base_url: str) -> None:
    engine = await started(azure_openai, **azure_spec(base_url, api_key_env="TEST_WRONG_KEY"))
    with pytest.raises(UpstreamError) as caught:
        await transcribe(engine, speech(), TranscribeOptions())
    await engine.stop()
    assert caught.value.status == 401 and not caught.value.transient
    assert SECRET_MARKER not in str(caught.value)


async def test_azure_streams_through_its_realtime_socket(provider: FakeOpenAI, base_url: str) -> None:
    engine = await started(azure_openai, **azure_spec(base_url))
    target = upstream_realtime_target(engine)
    assert target is not None and target.dialect == "beta"
    results = await stream_results(engine.open_stream(TranscribeOptions()), speech())
    await engine.stop()
    assert [r.text for r in results if isinstance(r, Final)] == [TEXT]
    socket = provider.sockets[-1]
    assert socket.path == "/openai/realtime"
    assert socket.query["deployment"] == AZURE_DEPLOYMENT and socket.query["intent"] == "transcription"
    assert socket.query["api-version"] == "2025-04-01-preview"
    assert socket.headers["api-key"] == AZURE_KEY
    update = socket.events[0]
    assert update["session"]["input_audio_transcription"]["model"] == AZURE_DEPLOYMENT


def test_azure_needs_a_resource_url_and_a_deployment() -> None:
    with pytest.raises(CatalogError, match="base_url"):
        azure_openai.build("m", ModelSpec(engine="azure_openai", api_key_env="TEST_AZURE_KEY"), WorkerPool(1))
    with pytest.raises(CatalogError, match="deployment"):
        spec = ModelSpec(
            engine="azure_openai", base_url="https://x.openai.azure.com", api_key_env="TEST_AZURE_KEY"
        )
        azure_openai.build("m", spec, WorkerPool(1))


# --- openai_compatible ---


def compatible_spec(base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "engine": "openai_compatible",
        "base_url": f"{base_url}/compat/v1",
        "api_key_env": "TEST_OPENAI_KEY",
        "upstream_model": "Systran/faster-whisper-small",
        **extra,
    }


async def test_openai_compatible_posts_to_its_custom_base_url(provider: FakeOpenAI, base_url: str) -> None:
    engine = await started(openai_compatible, **compatible_spec(base_url))
    assert upstream_realtime_target(engine) is None
    transcript = await transcribe(engine, speech(), TranscribeOptions(prompt="foxes"))
    await engine.stop()
    assert transcript.text == TEXT
    sent = provider.requests[-1]
    assert sent.path == "/compat/v1/audio/transcriptions"
    assert sent.fields["model"] == ["Systran/faster-whisper-small"] and sent.fields["prompt"] == ["foxes"]


async def test_openai_compatible_streams_by_local_agreement(provider: FakeOpenAI, base_url: str) -> None:
    engine = await started(openai_compatible, **compatible_spec(base_url))
    results = await stream_results(engine.open_stream(TranscribeOptions()), speech(2.5), pace_s=0.03)
    await engine.stop()
    text = " ".join(r.text for r in results if isinstance(r, Final))
    # The fake answers the same sentence for any buffer, so a trimmed buffer may be "heard" again.
    assert text.startswith(TEXT) and isinstance(results[-1], Flushed)
    assert len(provider.requests) >= 2, "re-decoded as audio grew"
    assert not provider.sockets


async def test_openai_compatible_failure_in_a_stream_is_an_upstream_error(
    provider: FakeOpenAI, base_url: str
) -> None:
    provider.faults.fail_next(status=502, times=10)
    engine = await started(openai_compatible, **compatible_spec(base_url))
    with pytest.raises(EngineError) as caught:
        await stream_results(engine.open_stream(TranscribeOptions()), speech(2.5))
    await engine.stop()
    # The agreement stream re-raises from send() with the provider's UpstreamError as the cause.
    error = caught.value if isinstance(caught.value, UpstreamError) else caught.value.__cause__
    assert isinstance(error, UpstreamError) and error.transient and error.status == 502
