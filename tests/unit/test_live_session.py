"""LiveSession: PCM chunks in, turns and text out, with a scripted engine (and a few with the real one)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import TypeVar

import numpy as np
import pytest
import soxr

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import ENGINE_RATE_HZ, Audio, float_to_pcm16
from earshot.audio.vad import SileroModel, VadParams
from earshot.engines.base import Engine, EngineError, Segment, TranscribeOptions
from earshot.streaming.events import (
    Closed,
    EngineResult,
    Error,
    Final,
    Flushed,
    PhraseEnd,
    SessionEvent,
    SpeechStarted,
    SpeechStopped,
    UtteranceEnd,
)
from earshot.streaming.live_config import LiveConfig
from earshot.streaming.session import SPEECH_PAD_MS, TRAILING_PAD_MS, LiveSession
from tests.conftest import shared_audio

CLIENT_RATE_HZ = 24_000
GOFORWARD = "pocketsphinx-testdata/goforward.wav"
GOFORWARD_TEXT = "go forward ten meters"
MANUAL = LiveConfig(vad=None)
EventT = TypeVar("EventT", bound=SessionEvent)


class ScriptedStream:
    """An engine stream that keeps the audio it is sent and, at each finalize, says the engine's next line."""

    def __init__(self, engine: ScriptedEngine) -> None:
        self._engine = engine
        self.received: list[np.ndarray] = []
        self._results: asyncio.Queue[EngineResult | None] = asyncio.Queue()
        self._finalized_s = 0.0
        self.prepared_at_s: list[float] = []  # audio received when each early final decode was asked for

    @property
    def heard_s(self) -> float:
        """Seconds of audio received so far."""
        return sum(len(chunk) for chunk in self.received) / ENGINE_RATE_HZ

    async def send(self, audio: Audio) -> None:
        """Keep the audio, or fail if the engine is scripted to."""
        if self._engine.failing_sends:
            self._engine.failing_sends -= 1
            raise EngineError("the engine fell over")
        if self._engine.buggy_sends:
            self._engine.buggy_sends -= 1
            raise KeyError("a bug inside the engine")
        self.received.append(audio.samples)

    async def prepare_final(self) -> None:
        """Note where the session let the engine start its final decode."""
        self.prepared_at_s.append(self.heard_s)

    async def finalize(self) -> None:
        """A Final with the next scripted text for the audio since the last finalize, then Flushed."""
        if self.heard_s > self._finalized_s:
            text = self._engine.lines.popleft() if self._engine.lines else ""
            self._results.put_nowait(Final(text, self._finalized_s, self.heard_s))
            self._finalized_s = self.heard_s
        self._results.put_nowait(Flushed())

    async def close(self) -> None:
        """Finalize, then end `results()`; an engine doing I/O yields to the loop on the way."""
        if self._engine.close_does_io:
            await asyncio.sleep(0)
        await self.finalize()
        if self._engine.close_does_io:
            await asyncio.sleep(0)
        self._results.put_nowait(None)

    async def results(self) -> AsyncIterator[EngineResult]:
        """Finals and Flushed marks until closed."""
        while (result := await self._results.get()) is not None:
            yield result


class ScriptedEngine:
    """An engine whose streams say `lines` in order, one per finalized stretch of audio."""

    name = "scripted"
    ready = True
    language = "en"

    def __init__(
        self, *lines: str, close_does_io: bool = True, failing_sends: int = 0, buggy_sends: int = 0
    ) -> None:
        self.lines = deque(lines)
        self.close_does_io = close_does_io
        self.failing_sends = failing_sends
        self.buggy_sends = buggy_sends
        self.streams: list[ScriptedStream] = []

    async def start(self) -> None:
        """Nothing to load."""

    async def stop(self) -> None:
        """Nothing to release."""

    async def transcribe_segments(self, audio: Audio, options: TranscribeOptions) -> AsyncIterator[Segment]:
        """Live tests only: no one-shot transcripts."""
        return
        yield

    def open_stream(self, options: TranscribeOptions) -> ScriptedStream:
        """A new scripted stream."""
        stream = ScriptedStream(self)
        self.streams.append(stream)
        return stream

    @property
    def received_samples(self) -> int:
        """Engine-rate samples all its streams were sent."""
        return sum(len(chunk) for stream in self.streams for chunk in stream.received)


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tone(ms: int, rate_hz: int = ENGINE_RATE_HZ, hz: float = 440.0) -> bytes:
    """`ms` of a sine tone as PCM16 at `rate_hz`."""
    t = np.arange(rate_hz * ms // 1000) / rate_hz
    return float_to_pcm16((0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32))


def manual_session(
    engine: Engine, config: LiveConfig = MANUAL, clock: FakeClock | None = None
) -> LiveSession:
    """A session whose turns end only when the caller commits."""
    return LiveSession(engine, TranscribeOptions(), config, clock=clock or FakeClock())


def vad_session(engine: Engine, prepare_final_after_ms: int | None = None) -> LiveSession:
    """A session at the OpenAI rate (24 kHz) whose turns the server VAD finds."""
    config = LiveConfig(input_rate_hz=CLIENT_RATE_HZ, prepare_final_after_ms=prepare_final_after_ms)
    return LiveSession(engine, TranscribeOptions(), config, vad_stream=SileroModel.shared().stream)


def speech_at_client_rate(relpath: str = GOFORWARD) -> np.ndarray:
    """A shared clip resampled to 24 kHz, as a Realtime client would send it."""
    samples = decode_audio(shared_audio(relpath).read_bytes()).samples
    return np.asarray(soxr.resample(samples, ENGINE_RATE_HZ, CLIENT_RATE_HZ), dtype=np.float32)


def silence(seconds: float) -> np.ndarray:
    """Faint noise, like a quiet room, at 24 kHz."""
    rng = np.random.default_rng(3)
    return (rng.standard_normal(int(seconds * CLIENT_RATE_HZ)) * 0.002).astype(np.float32)


async def stream_audio(session: LiveSession, samples: np.ndarray, chunk_ms: int) -> None:
    """Append 24 kHz audio in chunks, yielding to the loop between them as a socket would."""
    pcm = float_to_pcm16(samples)
    step = 2 * CLIENT_RATE_HZ * chunk_ms // 1000
    for start in range(0, len(pcm), step):
        await session.append(pcm[start : start + step])
        await asyncio.sleep(0)


async def take(session: LiveSession, count: int) -> list[SessionEvent]:
    """The next `count` events (failing if they don't come within a second)."""
    events = session.events()
    return [await asyncio.wait_for(anext(events), 1.0) for _ in range(count)]


async def close_and_collect(session: LiveSession, flush: bool = True) -> list[SessionEvent]:
    """Close the session and return the events not read yet, Closed last."""
    await session.close(flush=flush)
    return [event async for event in session.events()]


def kinds(events: list[SessionEvent]) -> list[str]:
    """The events' class names, in order, without the PhraseEnd marks between a turn's phrases."""
    return [type(event).__name__ for event in events if not isinstance(event, PhraseEnd)]


def split_turns(events: list[SessionEvent]) -> list[list[SessionEvent]]:
    """The events up to each UtteranceEnd, one list per turn (what follows the last one is left out)."""
    turns: list[list[SessionEvent]] = [[]]
    for event in events:
        turns[-1].append(event)
        if isinstance(event, UtteranceEnd):
            turns.append([])
    return turns[:-1]


def the_one(events: list[SessionEvent], kind: type[EventT]) -> EventT:
    """The only event of this kind."""
    [found] = [event for event in events if isinstance(event, kind)]
    return found


# --- manual turns ---


async def test_manual_commit_sends_the_audio_and_gives_final_then_utterance_end() -> None:
    engine = ScriptedEngine("hello world")
    session = manual_session(engine)
    audio = tone(1000)
    await session.append(audio[:16_000])
    assert session.in_turn
    await session.append(audio[16_000:])
    assert session.uncommitted_ms == 1000
    await session.commit()
    assert not session.in_turn and session.uncommitted_ms == 0
    final, end = await take(session, 2)
    assert final == Final("hello world", 0.0, 1.0, final.words)
    assert [word.word for word in final.words] == ["hello", "world"]
    assert end == UtteranceEnd(1.0)
    [stream] = engine.streams
    assert float_to_pcm16(np.concatenate(stream.received)) == audio
    assert await close_and_collect(session) == [Closed()]


async def test_each_committed_turn_is_timed_on_the_session_clock() -> None:
    session = manual_session(ScriptedEngine("one", "two"))
    await session.append(tone(1000))
    await session.commit()
    await session.append(tone(500))
    await session.commit()
    events = await close_and_collect(session)
    finals = [event for event in events if isinstance(event, Final)]
    assert [(f.text, f.start, f.end) for f in finals] == [("one", 0.0, 1.0), ("two", 1.0, 1.5)]
    assert [event for event in events if isinstance(event, UtteranceEnd)] == [
        UtteranceEnd(1.0),
        UtteranceEnd(1.5),
    ]


async def test_clear_drops_the_open_turns_text() -> None:
    engine = ScriptedEngine("words the caller took back", "what the caller meant")
    session = manual_session(engine)
    await session.append(tone(500))
    await session.clear()
    assert not session.in_turn and session.uncommitted_ms == 0
    await session.append(tone(700))
    await session.commit()
    events = await close_and_collect(session)
    assert kinds(events) == ["Final", "UtteranceEnd", "Closed"]
    assert isinstance(events[0], Final) and events[0].text == "what the caller meant"
    assert (events[0].start, events[0].end) == (0.5, 1.2)


async def test_a_commit_flushes_and_the_session_goes_on() -> None:
    session = manual_session(ScriptedEngine("first", "second"))
    await session.append(tone(300))
    await session.commit()
    assert kinds(await take(session, 2)) == ["Final", "UtteranceEnd"]
    await session.append(tone(300))
    await session.commit()
    final, _ = await take(session, 2)
    assert isinstance(final, Final) and final.text == "second"


async def test_a_commit_with_no_audio_gives_no_text_and_sends_nothing() -> None:
    engine = ScriptedEngine("never said")
    session = manual_session(engine)
    await session.commit()
    events = await close_and_collect(session)
    assert "Final" not in kinds(events) and events[-1] == Closed()
    assert engine.received_samples == 0


# --- audio accounting and resampling ---


async def test_audio_ms_counts_input_audio_at_its_rate_across_rate_changes() -> None:
    session = manual_session(ScriptedEngine(), LiveConfig(input_rate_hz=24_000, vad=None))
    for _ in range(10):
        await session.append(bytes(480))  # 240 samples at 24 kHz = 10 ms
    assert session.audio_ms == 100
    for _ in range(7):
        await session.append(bytes(1000))  # 500 samples each: 2400 + 3500 samples = 245.83 ms
    assert session.audio_ms == 245
    session.reconfigure(LiveConfig(input_rate_hz=16_000, vad=None))
    assert session.audio_ms == 245
    await session.append(bytes(3200))  # 1600 samples at 16 kHz = 100 ms
    assert session.audio_ms == 345
    session.reconfigure(LiveConfig(input_rate_hz=8_000, vad=None))
    await session.append(bytes(800))  # 400 samples at 8 kHz = 50 ms
    assert session.audio_ms == 395


async def test_24_khz_input_reaches_the_engine_at_16_khz_at_the_same_pitch() -> None:
    engine = ScriptedEngine("a tone")
    session = manual_session(engine, LiveConfig(input_rate_hz=CLIENT_RATE_HZ, vad=None))
    pcm = tone(2400, CLIENT_RATE_HZ)
    for start in range(0, len(pcm), 960):  # 20 ms chunks
        await session.append(pcm[start : start + 960])
    await session.commit()
    assert session.audio_ms == 2400
    final, _ = await take(session, 2)
    received = np.concatenate(engine.streams[0].received)
    # 2/3 as many samples, less at most 20 ms the streaming resampler still holds.
    assert 2400 * 16 - 20 * 16 <= len(received) <= 2400 * 16
    spectrum = np.abs(np.fft.rfft(received))
    assert np.argmax(spectrum) * ENGINE_RATE_HZ / len(received) == pytest.approx(440, abs=2)
    assert isinstance(final, Final) and final.end == pytest.approx(2.4, abs=0.02)


# --- server VAD on real speech ---


@pytest.mark.parametrize("chunk_ms", [20, 100])
async def test_server_vad_finds_one_turn_in_speech_then_silence(chunk_ms: int) -> None:
    engine = ScriptedEngine(GOFORWARD_TEXT)
    session = vad_session(engine)
    audio = np.concatenate([speech_at_client_rate(), silence(1.0)])
    duration_s = len(audio) / CLIENT_RATE_HZ
    await stream_audio(session, audio, chunk_ms)
    assert not session.in_turn
    assert session.audio_ms == len(audio) * 1000 // CLIENT_RATE_HZ
    events = await close_and_collect(session)
    [turn] = split_turns(events)
    assert events == [*turn, Closed()]
    # The text may come at the pause before the turn is over: Final and SpeechStopped come in either order.
    assert kinds(turn)[0] == "SpeechStarted" and kinds(turn)[-1] == "UtteranceEnd"
    assert sorted(kinds(turn)) == ["Final", "SpeechStarted", "SpeechStopped", "UtteranceEnd"]
    started, stopped, final = the_one(turn, SpeechStarted), the_one(turn, SpeechStopped), the_one(turn, Final)
    # "go forward ten meters" is spoken from about 0.5 s to 2.2 s of the 2.8 s clip.
    assert 0.0 <= started.t <= 0.5
    assert 1.9 <= stopped.t <= 2.786 < duration_s
    assert final.text == GOFORWARD_TEXT
    # The engine hears the turn with the margins one-shot decoding gives speech (a little more before it than
    # the prefix padding), not the silence after it; this engine times its text from the audio's start.
    lead_s = (SPEECH_PAD_MS - VadParams().prefix_padding_ms) / 1000
    assert final.start == pytest.approx(started.t - lead_s, abs=0.001)
    assert stopped.t <= final.end <= duration_s
    heard_s = engine.received_samples / ENGINE_RATE_HZ
    assert stopped.t - started.t <= heard_s <= stopped.t - started.t + lead_s + TRAILING_PAD_MS / 1000 + 0.05


async def test_utterance_end_is_when_the_turns_last_word_ended() -> None:
    session = vad_session(ScriptedEngine(GOFORWARD_TEXT))
    await stream_audio(session, np.concatenate([speech_at_client_rate(), silence(1.0)]), 20)
    events = await close_and_collect(session)
    assert the_one(events, UtteranceEnd).t == the_one(events, Final).end


async def test_silence_makes_no_events_and_sends_the_engine_nothing() -> None:
    engine = ScriptedEngine("nothing to hear")
    session = vad_session(engine)
    await stream_audio(session, silence(3.0), 20)
    assert session.audio_ms == 3000
    assert await close_and_collect(session) == [Closed()]
    assert engine.received_samples == 0


async def test_speech_pause_speech_makes_two_turns_in_order() -> None:
    engine = ScriptedEngine("first turn", "second turn")
    session = vad_session(engine)
    speech = speech_at_client_rate()
    gap_s = 1.5
    await stream_audio(session, np.concatenate([speech, silence(gap_s), speech, silence(1.0)]), 20)
    events = await close_and_collect(session)
    first, second = split_turns(events)
    assert events == [*first, *second, Closed()]
    for turn, text in [(first, "first turn"), (second, "second turn")]:
        assert kinds(turn)[0] == "SpeechStarted" and kinds(turn)[-1] == "UtteranceEnd"
        assert sorted(kinds(turn)) == ["Final", "SpeechStarted", "SpeechStopped", "UtteranceEnd"]
        assert the_one(turn, Final).text == text
    # The second turn sits where the second copy of the speech is.
    offset_s = len(speech) / CLIENT_RATE_HZ + gap_s
    start_1, start_2 = the_one(first, SpeechStarted).t, the_one(second, SpeechStarted).t
    stop_1, stop_2 = the_one(first, SpeechStopped).t, the_one(second, SpeechStopped).t
    assert start_2 == pytest.approx(start_1 + offset_s, abs=0.1)
    assert stop_2 == pytest.approx(stop_1 + offset_s, abs=0.1)
    assert stop_1 < start_2


@pytest.mark.parametrize("after_ms", [100, 200])
async def test_a_pause_that_may_end_the_turn_starts_its_final_decode_on_what_the_turn_ends_with(
    after_ms: int,
) -> None:
    engine = ScriptedEngine(GOFORWARD_TEXT)
    session = vad_session(engine, prepare_final_after_ms=after_ms)
    await stream_audio(session, np.concatenate([speech_at_client_rate(), silence(1.0)]), 20)
    events = await close_and_collect(session)
    [stream] = engine.streams
    assert the_one(events, Final).text == GOFORWARD_TEXT
    # Asked once, in the pause; the turn then ends on exactly that audio, so the decode under way is its text.
    assert stream.prepared_at_s == [stream.heard_s]
    assert the_one(events, SpeechStopped).t < the_one(events, Final).end + 0.2


async def test_an_early_final_decode_is_asked_again_when_the_speech_goes_on_after_the_pause() -> None:
    engine = ScriptedEngine("the whole turn")
    session = vad_session(engine, prepare_final_after_ms=150)
    speech = speech_at_client_rate()[int(0.4 * CLIENT_RATE_HZ) : int(2.25 * CLIENT_RATE_HZ)]  # the words
    # A pause of about 250 ms: long enough to prepare at, too short to end the turn (500 ms of silence) or a
    # phrase (300 ms).
    await stream_audio(session, np.concatenate([speech, silence(0.2), speech, silence(1.0)]), 20)
    events = await close_and_collect(session)
    [turn] = split_turns(events)
    [stream] = engine.streams
    assert len(stream.prepared_at_s) == 2 and stream.prepared_at_s[0] < stream.prepared_at_s[1]
    assert stream.prepared_at_s[-1] == stream.heard_s
    assert [e.text for e in turn if isinstance(e, Final)] == ["the whole turn"]


# --- limits ---


async def test_idle_timeout_after_idle_timeout_s_without_audio_or_touch() -> None:
    clock = FakeClock()
    session = manual_session(ScriptedEngine(), LiveConfig(vad=None, idle_timeout_s=10.0), clock)
    clock.now += 9.9
    assert session.expired() is None
    await session.append(tone(20))
    clock.now += 9.9
    assert session.expired() is None
    session.touch()
    clock.now += 9.9
    assert session.expired() is None
    await session.commit()
    clock.now += 9.9
    assert session.expired() is None
    clock.now += 0.1
    assert session.expired() == "idle_timeout"


async def test_max_duration_ends_even_a_busy_session() -> None:
    clock = FakeClock()
    config = LiveConfig(vad=None, idle_timeout_s=10.0, max_duration_s=60.0)
    session = manual_session(ScriptedEngine(), config, clock)
    for _ in range(11):
        clock.now += 5.0
        await session.append(tone(20))
        assert session.expired() is None
    clock.now += 5.0
    await session.append(tone(20))
    assert session.expired() == "max_duration"


# --- closing ---


@pytest.mark.parametrize("close_does_io", [True, False], ids=["io", "no-io"])
async def test_close_with_flush_finishes_the_open_turn_before_closed(close_does_io: bool) -> None:
    session = manual_session(ScriptedEngine("last words", close_does_io=close_does_io))
    await session.append(tone(600))
    events = await close_and_collect(session, flush=True)
    assert kinds(events) == ["Final", "UtteranceEnd", "Closed"]
    assert isinstance(events[0], Final) and events[0].text == "last words"


@pytest.mark.parametrize("close_does_io", [True, False], ids=["io", "no-io"])
async def test_close_without_flush_drops_the_open_turn(close_does_io: bool) -> None:
    session = manual_session(ScriptedEngine("unheard", close_does_io=close_does_io))
    await session.append(tone(600))
    assert await close_and_collect(session, flush=False) == [Closed()]


async def test_close_is_idempotent() -> None:
    session = manual_session(ScriptedEngine())
    await session.close()
    await session.close()
    assert await close_and_collect(session) == [Closed()]


# --- engine failures ---


async def test_an_engine_send_failure_is_an_error_and_the_next_turn_works() -> None:
    engine = ScriptedEngine("after the failure", failing_sends=1)
    session = manual_session(engine)
    await session.append(tone(500))
    [error] = await take(session, 1)
    assert error == Error("transcription_failed", "the engine fell over")
    assert not session.in_turn
    await session.append(tone(400))
    await session.commit()
    events = await close_and_collect(session)
    assert kinds(events) == ["Final", "UtteranceEnd", "Closed"]
    assert isinstance(events[0], Final) and events[0].text == "after the failure"
    assert len(engine.streams) == 2
    assert engine.streams[1].heard_s == pytest.approx(0.4)


async def test_an_engine_bug_is_a_transcription_error_not_a_stuck_session() -> None:
    engine = ScriptedEngine("after the bug", buggy_sends=1)
    session = manual_session(engine)
    await session.append(tone(500))
    [error] = await take(session, 1)
    assert error == Error("transcription_failed", "the engine failed"), "no internals reach the caller"
    await session.append(tone(400))
    await session.commit()
    events = await close_and_collect(session)
    assert kinds(events) == ["Final", "UtteranceEnd", "Closed"]
    assert isinstance(events[0], Final) and events[0].text == "after the bug"


# --- the real pocketsphinx engine ---


async def test_pocketsphinx_transcribes_a_server_vad_turn(engine: Engine) -> None:
    session = vad_session(engine)
    audio = np.concatenate([speech_at_client_rate(), silence(1.0)])
    await stream_audio(session, audio, 100)
    events = await close_and_collect(session)
    turn_events = [kind for kind in kinds(events) if kind not in ("Partial", "Final")]
    assert turn_events == ["SpeechStarted", "SpeechStopped", "UtteranceEnd", "Closed"]
    assert " ".join(e.text for e in events if isinstance(e, Final)) == GOFORWARD_TEXT
    started = the_one(events, SpeechStarted)
    duration_s = len(audio) / CLIENT_RATE_HZ
    assert all(started.t <= e.start <= e.end <= duration_s for e in events if isinstance(e, Final))


async def test_pocketsphinx_transcribes_a_manual_commit(engine: Engine) -> None:
    samples = decode_audio(shared_audio(GOFORWARD).read_bytes()).samples
    session = LiveSession(engine, TranscribeOptions(interim_results=False), MANUAL)
    pcm = float_to_pcm16(samples)
    for start in range(0, len(pcm), 3200):
        await session.append(pcm[start : start + 3200])
    await session.commit()
    events = await close_and_collect(session)
    finals = [e for e in events if isinstance(e, Final)]
    assert " ".join(f.text for f in finals) == GOFORWARD_TEXT
    assert all(0.0 <= f.start <= f.end <= len(samples) / ENGINE_RATE_HZ for f in finals)
    assert kinds(events)[-2:] == ["UtteranceEnd", "Closed"]
