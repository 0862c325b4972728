"""Routing policy: fallback on transient failures only, circuit breaker, concurrency gate, failover."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.base import Segment, TranscribeOptions, UpstreamError, transcribe
from earshot.engines.results import EngineResult, Final, Flushed, Word
from earshot.routing.breaker import BreakerState, CircuitBreaker
from earshot.routing.chain import FallbackEngine
from earshot.routing.failover import ReplayLog
from earshot.routing.gate import ConcurrencyGate, ServerBusy, watching_queue
from earshot.routing.provider import Provider

OPTIONS = TranscribeOptions()


def seconds(duration_s: float) -> Audio:
    return Audio(np.zeros(round(duration_s * ENGINE_RATE_HZ), dtype=np.float32))


class ScriptedEngine:
    """A provider double whose one-shot calls fail as scripted, then answer with its name."""

    language = "en"
    ready = True

    def __init__(self, name: str, failures: list[UpstreamError] | None = None) -> None:
        self.name = name
        self.failures = list(failures or [])
        self.calls = 0
        self.in_flight = 0
        self.release = asyncio.Event()
        self.release.set()

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def transcribe_segments(self, audio: Audio, options: TranscribeOptions) -> AsyncIterator[Segment]:
        self.calls += 1
        self.in_flight += 1
        try:
            await self.release.wait()
            if self.failures:
                raise self.failures.pop(0)
            yield Segment(0.0, audio.duration_s, self.name)
        finally:
            self.in_flight -= 1

    def open_stream(self, options: TranscribeOptions) -> ScriptedStream:
        return ScriptedStream(self)


class ScriptedStream:
    """A live stream double: a Final per finalize naming the seconds heard; dies when its engine says so."""

    def __init__(self, engine: ScriptedEngine) -> None:
        self.engine = engine
        self.heard_s = 0.0
        self.finalized_s = 0.0
        self.results_queue: asyncio.Queue[EngineResult | UpstreamError | None] = asyncio.Queue()

    async def send(self, audio: Audio) -> None:
        self.heard_s += audio.duration_s

    async def finalize(self) -> None:
        if self.engine.failures:
            self.results_queue.put_nowait(self.engine.failures.pop(0))
            return
        start, self.finalized_s = self.finalized_s, self.heard_s
        text = f"{self.engine.name}:{start:.1f}-{self.heard_s:.1f}"
        self.results_queue.put_nowait(Final(text, start, self.heard_s, (Word(text, start, self.heard_s),)))
        self.results_queue.put_nowait(Flushed())

    async def close(self) -> None:
        await self.finalize()
        self.results_queue.put_nowait(None)

    async def results(self) -> AsyncIterator[EngineResult]:
        while (item := await self.results_queue.get()) is not None:
            if isinstance(item, UpstreamError):
                raise item
            yield item


def provider(
    engine: ScriptedEngine, *, failures: int = 3, reset_s: float = 10.0, limit: int | None = None
) -> Provider:
    gate = ConcurrencyGate(engine.name, limit, 1)
    return Provider(engine.name, engine, CircuitBreaker(failures, reset_s), gate, gate)


def transient(status: int = 503) -> UpstreamError:
    return UpstreamError("the upstream provider failed (ref x)", transient=True, status=status)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_a_transient_failure_on_the_primary_ends_on_the_fallback(status: int) -> None:
    primary, fallback = ScriptedEngine("primary", [transient(status)]), ScriptedEngine("fallback")
    chain = FallbackEngine([provider(primary), provider(fallback)])
    transcript = await transcribe(chain, seconds(1), OPTIONS)
    assert transcript.text == "fallback"
    assert (primary.calls, fallback.calls) == (1, 1)


@pytest.mark.parametrize("status", [400, 401, 413])
async def test_client_errors_are_not_retried_on_the_fallback(status: int) -> None:
    refused = UpstreamError("the upstream provider rejected the request", transient=False, status=status)
    primary, fallback = ScriptedEngine("primary", [refused]), ScriptedEngine("fallback")
    chain = FallbackEngine([provider(primary), provider(fallback)])
    with pytest.raises(UpstreamError) as caught:
        await transcribe(chain, seconds(1), OPTIONS)
    assert caught.value.status == status
    assert fallback.calls == 0


async def test_the_last_failure_is_raised_when_every_provider_fails() -> None:
    chain = FallbackEngine(
        [provider(ScriptedEngine("a", [transient(500)])), provider(ScriptedEngine("b", [transient(429)]))]
    )
    with pytest.raises(UpstreamError) as caught:
        await transcribe(chain, seconds(1), OPTIONS)
    assert caught.value.status == 429


def test_the_breaker_opens_after_consecutive_failures_and_half_opens_for_one_trial() -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_s=10)
    for _ in range(3):
        assert breaker.try_acquire(now=0)
        breaker.record_failure(now=0)
    assert breaker.state(now=1) is BreakerState.OPEN
    assert not breaker.try_acquire(now=9.9)
    assert breaker.retry_after_s(now=4) == pytest.approx(6)
    assert breaker.try_acquire(now=10) is True
    assert breaker.try_acquire(now=10) is False, "only one trial while half-open"
    breaker.record_failure(now=10)
    assert breaker.state(now=15) is BreakerState.OPEN, "a failed trial re-opens at once"
    assert breaker.try_acquire(now=20)
    breaker.record_success()
    assert breaker.state(now=20) is BreakerState.CLOSED
    assert breaker.try_acquire(now=20) and breaker.try_acquire(now=20)


async def test_an_open_breaker_skips_the_primary_until_it_half_opens() -> None:
    now = [0.0]
    primary = ScriptedEngine("primary", [transient(), transient()])
    fallback = ScriptedEngine("fallback")
    chain = FallbackEngine(
        [provider(primary, failures=2, reset_s=30), provider(fallback)], clock=lambda: now[0]
    )
    for _ in range(2):
        assert (await transcribe(chain, seconds(1), OPTIONS)).text == "fallback"
    assert (await transcribe(chain, seconds(1), OPTIONS)).text == "fallback"
    assert primary.calls == 2, "the open breaker kept the third request off the primary"
    now[0] = 31
    assert (await transcribe(chain, seconds(1), OPTIONS)).text == "primary", "half-open trial succeeds"
    assert primary.calls == 3


async def test_the_gate_queues_up_to_its_bound_then_answers_busy() -> None:
    engine = ScriptedEngine("only")
    engine.release.clear()
    chain = FallbackEngine([provider(engine, limit=1)])
    running = asyncio.create_task(transcribe(chain, seconds(1), OPTIONS))
    queued = asyncio.create_task(transcribe(chain, seconds(1), OPTIONS))
    await asyncio.sleep(0.01)
    assert engine.in_flight == 1, "the second request waits in the queue"
    with pytest.raises(ServerBusy):
        await transcribe(chain, seconds(1), OPTIONS)
    engine.release.set()
    assert [t.text for t in await asyncio.gather(running, queued)] == ["only", "only"]


async def test_a_busy_primary_hands_the_request_to_its_fallback() -> None:
    busy = ScriptedEngine("busy")
    busy.release.clear()
    busy_gate = ConcurrencyGate("busy", 1, 0)
    chain = FallbackEngine(
        [
            Provider("busy", busy, CircuitBreaker(3, 10), busy_gate, busy_gate),
            provider(ScriptedEngine("spare")),
        ]
    )
    holding = asyncio.create_task(transcribe(chain, seconds(1), OPTIONS))
    await asyncio.sleep(0.01)
    assert (await transcribe(chain, seconds(1), OPTIONS)).text == "spare"
    busy.release.set()
    await holding


def test_the_replay_log_keeps_only_audio_no_final_has_covered() -> None:
    replay = ReplayLog(max_audio_s=60)
    replay.add_audio(seconds(1.0), 0.0)
    replay.add_audio(seconds(1.0), 1.0)
    replay.finalized_until(1.5)
    assert replay.start_s(default_s=9) == pytest.approx(1.5)
    assert replay.audio_s == pytest.approx(0.5)
    replay.add_finalize()
    replay.add_audio(seconds(1.0), 2.0)
    replay.flushed()
    assert replay.start_s(default_s=9) == pytest.approx(2.0), (
        "a flush retires the finalize and the audio before it"
    )
    bounded = ReplayLog(max_audio_s=2)
    for i in range(5):
        bounded.add_audio(seconds(1.0), float(i))
    assert bounded.audio_s == pytest.approx(2.0) and bounded.dropped_s == pytest.approx(3.0)


async def collect(stream: object) -> list[EngineResult]:
    return [result async for result in stream.results()]  # type: ignore[attr-defined]


async def test_a_live_stream_fails_over_mid_stream_without_losing_or_repeating_audio() -> None:
    primary = ScriptedEngine("primary")
    fallback = ScriptedEngine("fallback")
    chain = FallbackEngine([provider(primary), provider(fallback)])
    stream = chain.open_stream(OPTIONS)
    results = asyncio.create_task(collect(stream))
    await stream.send(seconds(2.0))
    await stream.finalize()
    await asyncio.sleep(0.01)
    await stream.send(seconds(1.5))
    primary.failures.append(transient(1011))
    await stream.finalize()  # the primary dies instead of finalizing the last 1.5 s
    await stream.send(seconds(0.5))
    await stream.close()
    finals = [r for r in await results if isinstance(r, Final)]
    assert [f.text for f in finals] == ["primary:0.0-2.0", "fallback:0.0-1.5", "fallback:1.5-2.0"]
    assert [(f.start, f.end) for f in finals] == [(0.0, 2.0), (2.0, 3.5), (3.5, 4.0)], (
        "times stay on one clock"
    )
    assert finals[1].words[0].start == pytest.approx(2.0)


async def test_a_stream_whose_every_provider_fails_ends_with_the_error() -> None:
    chain = FallbackEngine([provider(ScriptedEngine("only", [transient()]))])
    stream = chain.open_stream(OPTIONS)
    results = asyncio.create_task(collect(stream))
    await stream.send(seconds(1.0))
    await stream.finalize()
    with pytest.raises(UpstreamError):
        await results


async def test_a_call_waits_in_the_gates_queue_for_at_most_max_wait_s_then_is_told_when_to_retry() -> None:
    gate = ConcurrencyGate("narrow", 1, max_queue=4, max_wait_s=0.2)
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.slot():
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    started = asyncio.get_running_loop().time()
    with pytest.raises(ServerBusy) as busy:
        async with gate.slot():
            pass
    assert 0.15 <= asyncio.get_running_loop().time() - started <= 1.0
    assert busy.value.retry_after_s >= 1 and gate.refused == 1 and gate.waiting == 0
    release.set()
    await holder
    async with gate.slot():
        assert gate.active == 1


class Positions:
    """A queue watcher that keeps every position it is told."""

    def __init__(self) -> None:
        self.told: list[int] = []
        self.admitted_after: list[int] | None = None

    def queued(self, position: int) -> None:
        self.told.append(position)

    def admitted(self) -> None:
        self.admitted_after = list(self.told)


async def test_a_waiting_call_is_told_its_queue_position_and_each_move_up() -> None:
    gate = ConcurrencyGate("narrow", 1, max_queue=4, max_wait_s=5.0)
    releases = [asyncio.Event() for _ in range(3)]
    watchers = [Positions() for _ in range(3)]

    async def call(index: int) -> None:
        with watching_queue(watchers[index]):
            async with gate.slot():
                await releases[index].wait()

    calls = []
    for index in range(3):
        calls.append(asyncio.create_task(call(index)))
        await asyncio.sleep(0)
    assert (watchers[0].told, watchers[1].told, watchers[2].told) == ([], [1], [2])
    assert gate.position_of(watchers[2]) == 2
    releases[0].set()
    await calls[0]
    for _ in range(100):
        if gate.active:
            break
        await asyncio.sleep(0)
    # The second call holds the slot now; the third moved up to next in line.
    assert (watchers[1].told, watchers[2].told) == ([1], [2, 1])
    assert watchers[0].admitted_after == [] and watchers[1].admitted_after == [1]
    assert watchers[2].admitted_after is None
    assert gate.position_of(watchers[1]) is None and gate.position_of(watchers[2]) == 1
    releases[1].set()
    releases[2].set()
    await asyncio.gather(*calls)
    assert gate.waiting == 0 and gate.active == 0


async def test_a_call_that_gets_a_slot_at_once_is_never_told_a_position() -> None:
    gate = ConcurrencyGate("wide", 2, max_queue=4)
    watcher = Positions()
    with watching_queue(watcher):
        async with gate.slot(), gate.slot():
            pass
    assert watcher.told == [] and watcher.admitted_after == []


async def test_a_watched_call_may_wait_longer_than_the_gate_lets_others() -> None:
    gate = ConcurrencyGate("narrow", 1, max_queue=4, max_wait_s=0.05)
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.slot():
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    # Unwatched, a call gives up after the gate's own wait.
    with pytest.raises(ServerBusy):
        async with gate.slot():
            pass
    watcher = Positions()

    async def patient() -> None:
        with watching_queue(watcher, max_wait_s=10.0):
            async with gate.slot():
                pass

    waiting = asyncio.create_task(patient())
    await asyncio.sleep(0.2)  # four times the gate's wait
    assert not waiting.done() and watcher.told == [1]
    release.set()
    await asyncio.gather(holder, waiting)
    assert watcher.admitted_after == [1]
