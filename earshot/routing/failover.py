"""Mid-stream failover for live sessions.

A FailoverStream is the engine stream a live session talks to. It keeps what a replacement provider would
need to hear (the audio since the last Final, and finalizes not yet flushed) in a bounded ReplayLog. When the
current provider's stream fails transiently, it opens the next provider in the chain and replays the log, so
the caller loses no words and gets no Final twice. Times are kept on this stream's own clock (seconds of audio
sent to it), whichever provider heard them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from earshot.audio.pcm import Audio
from earshot.engines.base import (
    EngineError,
    EngineStream,
    TranscribeOptions,
    UpstreamError,
    abort_stream,
    prepare_final,
)
from earshot.engines.results import EngineResult, Final, Flushed, Partial
from earshot.routing.gate import ServerBusy
from earshot.routing.provider import Provider, circuit_open_error

log = logging.getLogger(__name__)

# Audio kept for replay beyond the last Final; a session normally finalizes every few seconds.
MAX_REPLAY_S = 60.0
# How long a failed provider's stream gets to close before it is abandoned.
CLOSE_FAILED_STREAM_S = 2.0


@dataclass(slots=True)
class AudioOp:
    """Audio sent at `start_s` on the stream's clock."""

    audio: Audio
    start_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.audio.duration_s


@dataclass(slots=True)
class FinalizeOp:
    """A finalize whose Flushed has not come back yet."""


class ReplayLog:
    """What a replacement stream must hear: audio no Final has covered yet, and finalizes not yet flushed."""

    def __init__(self, max_audio_s: float = MAX_REPLAY_S) -> None:
        self.max_audio_s = max_audio_s
        self.ops: deque[AudioOp | FinalizeOp] = deque()
        self.dropped_s = 0.0
        # Kept as ops come and go: summed on every send, it cost a live session time growing with its turn.
        self._audio_s = 0.0

    @property
    def audio_s(self) -> float:
        """Seconds of audio held."""
        return self._audio_s

    def add_audio(self, audio: Audio, start_s: float) -> None:
        """Hold sent audio, dropping the oldest beyond the bound."""
        self.ops.append(AudioOp(audio, start_s))
        self._audio_s += audio.duration_s
        excess_s = self._audio_s - self.max_audio_s
        while excess_s > 0 and self.ops:
            oldest = self.ops[0]
            if isinstance(oldest, FinalizeOp):
                break
            self.ops.popleft()
            excess_s -= oldest.audio.duration_s
            self._audio_s -= oldest.audio.duration_s
            self.dropped_s += oldest.audio.duration_s

    def add_finalize(self) -> None:
        """Hold a finalize until its Flushed arrives."""
        self.ops.append(FinalizeOp())

    def finalized_until(self, end_s: float) -> None:
        """A Final covered the audio up to `end_s`: forget it."""
        kept: deque[AudioOp | FinalizeOp] = deque()
        for op in self.ops:
            if isinstance(op, AudioOp) and op.start_s < end_s:
                if op.end_s <= end_s:
                    continue
                op = AudioOp(op.audio.slice(end_s - op.start_s, op.audio.duration_s), end_s)
            kept.append(op)
        self.ops = kept
        self._audio_s = self._held_s()

    def flushed(self) -> None:
        """The oldest pending finalize came back flushed: it and the audio before it are done."""
        while self.ops:
            if isinstance(self.ops.popleft(), FinalizeOp):
                break
        self._audio_s = self._held_s()

    def _held_s(self) -> float:
        return sum(op.audio.duration_s for op in self.ops if isinstance(op, AudioOp))

    def start_s(self, default_s: float) -> float:
        """Where replay starts on the stream's clock: the first held audio, else `default_s`."""
        return next((op.start_s for op in self.ops if isinstance(op, AudioOp)), default_s)


def shifted(result: EngineResult, offset_s: float) -> EngineResult:
    """A result with its times moved by `offset_s`."""
    if not offset_s or isinstance(result, Flushed):
        return result
    if isinstance(result, Partial):
        return replace(result, start=result.start + offset_s, end=result.end + offset_s)
    words = tuple(replace(w, start=w.start + offset_s, end=w.end + offset_s) for w in result.words)
    return replace(result, start=result.start + offset_s, end=result.end + offset_s, words=words)


class FailoverStream:
    """An EngineStream over a chain of providers that moves to the next one when its upstream fails."""

    def __init__(
        self, providers: list[Provider], options: TranscribeOptions, clock: Callable[[], float]
    ) -> None:
        self._providers = providers
        self._options = options
        self._clock = clock
        self._index = -1
        self._inner: EngineStream | None = None
        self._slot: contextlib.AsyncExitStack | None = None
        self._sent_s = 0.0
        self._log = ReplayLog()
        self._out: asyncio.Queue[EngineResult | BaseException | None] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._pump: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self._closing = False
        self._proven = False

    async def send(self, audio: Audio) -> None:
        """Feed audio to the current provider (opening the first on the first call)."""
        async with self._lock:
            self._raise_if_failed()
            self._log.add_audio(audio, self._sent_s)
            self._sent_s += audio.duration_s
            if self._inner is None:
                await self._open_next(None)
                return
            try:
                await self._inner.send(audio)
            except UpstreamError as e:
                await self._switch(e)

    async def finalize(self) -> None:
        """Ask for Finals of everything sent, then one Flushed."""
        async with self._lock:
            self._raise_if_failed()
            self._log.add_finalize()
            if self._inner is None:
                await self._open_next(None)
                return
            try:
                await self._inner.finalize()
            except UpstreamError as e:
                await self._switch(e)

    async def prepare_final(self) -> None:
        """Let the current provider start its final decode early, where it can."""
        async with self._lock:
            if self._failed is None and self._inner is not None:
                await prepare_final(self._inner)

    async def close(self) -> None:
        """Finalize and end; `results()` finishes after the last Final."""
        async with self._lock:
            self._closing = True
            if self._failed is not None:
                return
            if self._inner is None:
                self._out.put_nowait(None)
                return
            try:
                await self._inner.close()
            except UpstreamError as e:
                await self._switch(e)

    async def abort(self) -> None:
        """End now: the current provider's stream is aborted and `results()` ends without a final decode."""
        async with self._lock:
            self._closing = True
            inner, self._inner = self._inner, None
            pump, self._pump = self._pump, None
            if pump is not None:
                pump.cancel()
            if inner is not None:
                with contextlib.suppress(EngineError, OSError, TimeoutError):
                    await asyncio.wait_for(abort_stream(inner), CLOSE_FAILED_STREAM_S)
                self._providers[self._index].breaker.release()
            await self._release_slot()
            self._out.put_nowait(None)

    async def results(self) -> AsyncIterator[EngineResult]:
        """Results of whichever provider is serving, on this stream's clock; raises what ended it."""
        while (item := await self._out.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise EngineError(str(self._failed))

    async def _pump_results(self, inner: EngineStream, offset_s: float) -> None:
        try:
            async for result in inner.results():
                if not self._proven:
                    self._proven = True
                    self._providers[self._index].breaker.record_success()
                moved = shifted(result, offset_s)
                if isinstance(moved, Final):
                    self._log.finalized_until(moved.end)
                elif isinstance(moved, Flushed):
                    self._log.flushed()
                self._out.put_nowait(moved)
        except UpstreamError as e:
            async with self._lock:
                if self._inner is inner:
                    await self._switch(e)
            return
        except EngineError as e:
            async with self._lock:
                if self._inner is inner:
                    await self._drop_inner()
                    self._providers[self._index].breaker.release()
                    self._fail(e)
            return
        async with self._lock:
            if self._inner is not inner:
                return
            if self._closing:
                self._providers[self._index].breaker.record_success()
                await self._release_slot()
                self._out.put_nowait(None)
            else:
                await self._switch(UpstreamError("the upstream stream ended early", transient=True))

    async def _switch(self, error: UpstreamError) -> None:
        """The current provider failed: fail over if the failure is transient, else end the stream."""
        failed = self._providers[self._index]
        await self._drop_inner()
        if not error.transient:
            failed.breaker.release()
            self._fail(error)
            return
        failed.breaker.record_failure(self._clock())
        log.warning("live stream on model %s failed (%s); failing over", failed.model_id, error)
        await self._open_next(error)

    async def _open_next(self, failure: BaseException | None) -> None:
        """Open the next available provider and replay the log into it."""
        while self._index + 1 < len(self._providers):
            self._index += 1
            provider = self._providers[self._index]
            self._proven = False
            if not provider.breaker.try_acquire(self._clock()):
                failure = circuit_open_error(provider, self._clock())
                continue
            slot = contextlib.AsyncExitStack()
            try:
                await slot.enter_async_context(provider.stream_gate.slot())
            except ServerBusy as e:
                provider.breaker.release()
                failure = e
                continue
            self._slot = slot
            inner = provider.engine.open_stream(self._options)
            offset_s = self._log.start_s(self._sent_s)
            self._inner = inner
            self._pump = asyncio.create_task(self._pump_results(inner, offset_s))
            try:
                for op in list(self._log.ops):
                    if isinstance(op, AudioOp):
                        await inner.send(op.audio)
                    else:
                        await inner.finalize()
                if self._closing:
                    await inner.close()
            except UpstreamError as e:
                await self._drop_inner()
                if not e.transient:
                    provider.breaker.release()
                    self._fail(e)
                    return
                provider.breaker.record_failure(self._clock())
                failure = e
                continue
            if self._index > 0:
                log.warning("live stream now on model %s", provider.model_id)
            return
        self._fail(failure or UpstreamError("no provider could serve the stream", transient=True))

    async def _drop_inner(self) -> None:
        inner, self._inner = self._inner, None
        pump, self._pump = self._pump, None
        if pump is not None and pump is not asyncio.current_task():
            pump.cancel()
        if inner is not None:
            with contextlib.suppress(EngineError, OSError, TimeoutError):
                await asyncio.wait_for(inner.close(), CLOSE_FAILED_STREAM_S)
        await self._release_slot()

    async def _release_slot(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            await slot.aclose()

    def _fail(self, error: BaseException) -> None:
        if self._failed is None:
            self._failed = error
            self._out.put_nowait(error)
