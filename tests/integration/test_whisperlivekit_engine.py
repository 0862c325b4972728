"""The WhisperLiveKit engine against a fake WhisperLiveKit server: one-shot, live, pacing, faults, gate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import Audio
from earshot.engines.base import TranscribeOptions, UpstreamError, transcribe
from earshot.engines.results import EngineResult, Final, Flushed, Partial
from earshot.engines.spec import ModelSpec
from earshot.engines.whisperlivekit import WhisperLiveKitEngine, build
from tests.conftest import shared_audio
from tests.fakes.server import FakeServer, serving
from tests.fakes.whisperlivekit import WhisperLiveKitFake

SHORT = ("pocketsphinx-testdata/goforward.wav", "go forward ten meters")
LONG = (
    "pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0920.wav",
    "had he married a more a amiable woman he might have been made still more respectable than he was",
)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[WhisperLiveKitFake, FakeServer]]:
    fake = WhisperLiveKitFake()
    with serving(fake.app) as server:
        yield fake, server


@pytest.fixture
def wlk(served: tuple[WhisperLiveKitFake, FakeServer]) -> Iterator[WhisperLiveKitFake]:
    """The module's fake server with default settings and no faults; `base_url` is where it listens."""
    fake, server = served
    fake.faults.reset()
    fake.connections.clear()
    fake.max_queue_s, fake.pcm_input, fake.stall_s, fake.commit_delay_s = 4.0, True, 0.0, 1.0
    fake.most_active = 0
    fake.base_url = server.base_url
    yield fake
    fake.faults.reset()


def clip_with_script(fake: WhisperLiveKitFake, clip: tuple[str, str]) -> Audio:
    """The clip's audio, with the fake set to read out its transcript over exactly its length."""
    audio = decode_audio(shared_audio(clip[0]).read_bytes())
    fake.script = clip[1].split()
    fake.seconds_per_word = (audio.duration_s - 0.05) / len(fake.script)
    return audio


def make_engine(base_url: str, model_id: str = "wlk", **options: Any) -> WhisperLiveKitEngine:
    spec = ModelSpec(engine="whisperlivekit", base_url=base_url, options=options, timeout_s=10)
    return build(model_id, spec, pool=None)  # type: ignore[arg-type]  # no worker pool needed


async def collect(results: list[EngineResult], stream: Any) -> None:
    async for result in stream.results():
        results.append(result)


@pytest.mark.parametrize("pcm_input", [True, False], ids=["pcm-input", "ffmpeg-input"])
async def test_one_shot_streams_the_file_and_returns_the_final_lines(
    wlk: WhisperLiveKitFake, pcm_input: bool
) -> None:
    wlk.pcm_input = pcm_input
    audio = clip_with_script(wlk, SHORT)
    engine = make_engine(wlk.base_url)
    await engine.start()
    transcript = await transcribe(engine, audio, TranscribeOptions())
    assert transcript.text == SHORT[1]
    assert transcript.segments[0].start == 0.0
    log = wlk.connections[-1]
    assert log.finished and not log.overflowed
    assert log.audio_s == pytest.approx(audio.duration_s, abs=0.01)


async def test_pacing_keeps_a_whole_file_within_the_servers_queue(wlk: WhisperLiveKitFake) -> None:
    wlk.max_queue_s = 1.5
    audio = clip_with_script(wlk, LONG)
    engine = make_engine(wlk.base_url, max_lead_s=1.0)
    transcript = await transcribe(engine, audio, TranscribeOptions())
    log = wlk.connections[-1]
    assert not log.overflowed
    assert log.most_queued_s <= 1.5
    assert transcript.text == LONG[1]


async def test_one_shot_text_comes_out_as_the_server_commits_it_not_only_at_the_end(
    wlk: WhisperLiveKitFake,
) -> None:
    audio = clip_with_script(wlk, LONG)
    engine = make_engine(wlk.base_url)
    heard_before_the_end: list[str] = []
    texts = []
    async for segment in engine.transcribe_segments(audio, TranscribeOptions()):
        texts.append(segment.text)
        if not wlk.connections[-1].finished:
            heard_before_the_end.append(segment.text)
    assert " ".join(texts) == LONG[1]
    # The server commits lines as it goes, so most of the text is out while the audio is still going up.
    assert len(heard_before_the_end) >= 2


async def test_a_caller_that_stops_reading_drops_the_connection_at_once(wlk: WhisperLiveKitFake) -> None:
    audio = clip_with_script(wlk, LONG)
    engine = make_engine(wlk.base_url, max_lead_s=1.0)
    segments = engine.transcribe_segments(audio, TranscribeOptions())
    first = await anext(segments)
    assert first.text
    await segments.aclose()  # type: ignore[attr-defined]  # an async generator
    for _ in range(100):
        if not wlk.active:
            break
        await asyncio.sleep(0.02)
    # The rest of the audio never went up.
    assert wlk.active == 0 and wlk.connections[-1].audio_s < audio.duration_s - 0.5


async def test_an_unpaced_flood_overflows_the_fakes_queue(wlk: WhisperLiveKitFake) -> None:
    wlk.max_queue_s = 1.5
    audio = clip_with_script(wlk, LONG)
    engine = make_engine(wlk.base_url, max_lead_s=1000)
    with pytest.raises(UpstreamError) as raised:
        await transcribe(engine, audio, TranscribeOptions())
    assert raised.value.transient
    assert wlk.connections[-1].overflowed


async def test_a_stuck_server_is_noticed_by_the_ping_timeout(wlk: WhisperLiveKitFake) -> None:
    wlk.max_queue_s, wlk.stall_s = 1.5, 3.0
    audio = clip_with_script(wlk, LONG)
    engine = make_engine(wlk.base_url, max_lead_s=1000, ping_interval_s=0.2, ping_timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(UpstreamError) as raised:
        await transcribe(engine, audio, TranscribeOptions())
    assert raised.value.transient
    # The server only closes after its 3 s stall; the client's own pings gave up well before.
    assert time.monotonic() - started < 2.5
    await asyncio.sleep(wlk.stall_s)  # let the fake come back before the next test


async def test_live_finalize_flushes_what_was_heard_and_nothing_is_reported_twice(
    wlk: WhisperLiveKitFake,
) -> None:
    wlk.commit_delay_s = 5.0  # nothing commits on its own before the finalize: the flush must finalize it
    audio = clip_with_script(wlk, SHORT)
    engine = make_engine(wlk.base_url, finalize_grace_s=0.5)
    stream = engine.open_stream(TranscribeOptions(interim_results=True))
    results: list[EngineResult] = []
    collector = asyncio.create_task(collect(results, stream))
    half = 1.5
    for at in range(0, int(half * 10)):
        await stream.send(audio.slice(at / 10, (at + 1) / 10))
        await asyncio.sleep(0.1)
    await stream.finalize()
    for _ in range(100):  # the flush comes once the server has caught up with the audio sent
        if any(isinstance(r, Flushed) for r in results):
            break
        await asyncio.sleep(0.05)
    flushed_at = next(i for i, r in enumerate(results) if isinstance(r, Flushed))
    first_words = " ".join(r.text for r in results[:flushed_at] if isinstance(r, Final)).split()
    assert first_words == SHORT[1].split()[: len(first_words)] and first_words  # the words heard by then
    await stream.send(audio.slice(half, audio.duration_s))
    await stream.close()
    await asyncio.wait_for(collector, 10)
    assert " ".join(r.text for r in results if isinstance(r, Final)) == SHORT[1]
    assert sum(isinstance(r, Flushed) for r in results) == 1
    assert any(isinstance(r, Partial) and r.text for r in results)


async def test_a_1011_close_mid_stream_fails_the_stream_transiently(wlk: WhisperLiveKitFake) -> None:
    wlk.faults.close_1011_after_s = 0.3
    audio = clip_with_script(wlk, SHORT)
    engine = make_engine(wlk.base_url)
    with pytest.raises(UpstreamError) as raised:
        await transcribe(engine, audio, TranscribeOptions())
    assert raised.value.transient
    assert "fake: internal error" not in str(raised.value)


async def test_a_refused_handshake_is_a_transient_upstream_error(wlk: WhisperLiveKitFake) -> None:
    wlk.faults.fail_next(503)
    audio = clip_with_script(wlk, SHORT)
    with pytest.raises(UpstreamError) as raised:
        await transcribe(make_engine(wlk.base_url), audio, TranscribeOptions())
    assert (raised.value.status, raised.value.transient) == (503, True)
    assert wlk.base_url not in str(raised.value)


async def test_the_gate_refuses_a_stream_over_the_servers_limit_across_models(
    wlk: WhisperLiveKitFake,
) -> None:
    audio = clip_with_script(wlk, SHORT)
    first = make_engine(wlk.base_url, "wlk-a", max_streams=1, gate_wait_s=0.3).open_stream(
        TranscribeOptions()
    )
    other_model = make_engine(wlk.base_url, "wlk-b", max_streams=1, gate_wait_s=0.3)
    await first.send(audio.slice(0, 0.2))
    with pytest.raises(UpstreamError) as raised:
        await other_model.open_stream(TranscribeOptions()).send(audio.slice(0, 0.2))
    assert (raised.value.status, raised.value.transient) == (503, True)
    await first.close()
    later = other_model.open_stream(TranscribeOptions())
    await later.send(audio.slice(0, 0.2))  # the slot is free again
    await later.close()


async def test_the_gate_queues_streams_so_at_most_n_run_on_one_server(wlk: WhisperLiveKitFake) -> None:
    audio = clip_with_script(wlk, SHORT).slice(0, 1.0)
    wlk.script, wlk.seconds_per_word = ["go", "forward"], 0.45
    engine = make_engine(wlk.base_url, "wlk-gated", max_streams=2, gate_wait_s=20)
    transcripts = await asyncio.gather(*(transcribe(engine, audio, TranscribeOptions()) for _ in range(4)))
    assert [t.text for t in transcripts] == ["go forward"] * 4
    assert wlk.most_active == 2
