"""A model's fallback chain as one Engine: each provider behind its breaker and gate, tried in order.

One-shot work moves to the next provider on a transient failure (connect error, timeout, 429, 5xx, close 1011)
that happens before any segment reached the caller, and never on the caller's own errors (400-class). Live
streams fail over mid-stream (routing/failover.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol, TypeVar

from earshot.audio.encoded import EncodedAudio
from earshot.audio.pcm import Audio
from earshot.engines.base import EngineStream, Segment, TranscribeOptions, UpstreamError, languages_of
from earshot.routing.breaker import CircuitBreaker
from earshot.routing.failover import FailoverStream
from earshot.routing.gate import ConcurrencyGate, ServerBusy
from earshot.routing.provider import Provider, circuit_open_error

log = logging.getLogger(__name__)


class Guarded(Protocol):
    """Anything called behind its own circuit breaker and concurrency gate."""

    breaker: CircuitBreaker
    gate: ConcurrencyGate


GuardedT = TypeVar("GuardedT", bound=Guarded)
ItemT = TypeVar("ItemT")


async def first_to_answer(
    providers: Sequence[GuardedT],
    call: Callable[[GuardedT], AsyncIterator[ItemT]],
    clock: Callable[[], float],
    refusal: Callable[[GuardedT, float], Exception],
    on_fallback: Callable[[int, UpstreamError], None],
    reaches_caller: Callable[[ItemT], bool] = lambda item: True,
) -> AsyncIterator[ItemT]:
    """The items of `call(provider)` for the first provider that answers; raises the last failure.

    Each provider is tried behind its breaker and in a slot of its gate. A transient UpstreamError moves on to
    the next provider (after `on_fallback(index, error)`) unless an item that `reaches_caller` has been
    yielded; a busy gate or an open breaker (`refusal(provider, now)`) moves on too; any other failure is
    raised at once.
    """
    failure: Exception | None = None
    for index, provider in enumerate(providers):
        if not provider.breaker.try_acquire(clock()):
            failure = refusal(provider, clock())
            continue
        told = False
        try:
            async with provider.gate.slot():
                async for item in call(provider):
                    told = told or reaches_caller(item)
                    yield item
        except ServerBusy as e:
            provider.breaker.release()
            failure = e
            continue
        except UpstreamError as e:
            if not e.transient:
                provider.breaker.release()
                raise
            provider.breaker.record_failure(clock())
            if told:
                raise
            failure = e
            on_fallback(index, e)
            continue
        except BaseException:
            provider.breaker.release()
            raise
        provider.breaker.record_success()
        return
    assert failure is not None
    raise failure


class FallbackEngine:
    """The Engine a route hands out: the model's own provider first, then its fallbacks."""

    def __init__(self, providers: list[Provider], clock: Callable[[], float] = time.monotonic) -> None:
        if not providers:
            raise ValueError("a chain needs at least one provider")
        self.providers = providers
        self.clock = clock
        primary = providers[0].engine
        self.name = providers[0].model_id
        self.language = primary.language
        self.languages = languages_of(primary)

    @property
    def ready(self) -> bool:
        """Ready when the model's own engine is (fallbacks are started by the router too)."""
        return self.providers[0].engine.ready

    async def start(self) -> None:
        """Nothing: the router starts and stops each engine once, however many chains share it."""

    async def stop(self) -> None:
        """Nothing: see `start`."""

    async def transcribe_segments(self, audio: Audio, options: TranscribeOptions) -> AsyncIterator[Segment]:
        """Segments from the first provider that succeeds; raises the last failure when none does."""
        whole: Audio | None = None

        def segments(provider: Provider) -> AsyncIterator[Segment]:
            nonlocal whole
            given = audio
            if isinstance(audio, EncodedAudio) and not getattr(provider.engine, "reads_encoded_audio", False):
                # An engine that reads every sample (more than once, maybe) gets them decoded once.
                whole = whole or Audio(audio.samples)
                given = whole
            return provider.engine.transcribe_segments(given, options)

        async for segment in first_to_answer(
            self.providers, segments, self.clock, circuit_open_error, self._log_fallback
        ):
            yield segment

    def _log_fallback(self, index: int, error: UpstreamError) -> None:
        following = self.providers[index + 1].model_id if index + 1 < len(self.providers) else None
        if following is not None:
            log.warning("model %s failed (%s); trying %s", self.providers[index].model_id, error, following)

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        """A live stream that moves to the next provider when its upstream fails mid-stream."""
        return FailoverStream(self.providers, options, self.clock)
