"""Speech synthesis routing: one synthesizer per `speech_models` entry, each behind its breaker and gate,
and each model's fallback chain.

A synthesis moves to the next model of its chain on a transient failure (connect error, timeout, 429, 5xx)
that happens before its first byte; after that the body is on its way to the caller and the failure ends it.
The first byte is fetched before the chain hands the stream out, so a caller's response status can still
say what went wrong.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from earshot.engines.base import UpstreamError
from earshot.engines.spec import CatalogError
from earshot.routing.breaker import CircuitBreaker
from earshot.routing.catalog import Catalog
from earshot.routing.gate import ConcurrencyGate, ServerBusy
from earshot.routing.provider import breaker_refusal
from earshot.voice.spec import SynthesisSpec
from earshot.voice.tts import SpeechRequest, Synthesizer

log = logging.getLogger(__name__)

# espeak-ng speaks one sentence at a time on one thread; this many requests take turns on it at once.
ESPEAK_CONCURRENCY = 4
_MODULES = {"espeak": "espeak", "openai": "openai_tts", "openai_compatible": "openai_tts"}


def build_synthesizer(model_id: str, spec: SynthesisSpec) -> Synthesizer:
    """The synthesizer for one `speech_models` entry."""
    try:
        module = importlib.import_module(f"earshot.voice.{_MODULES[spec.engine]}")
    except ImportError as e:
        raise CatalogError(
            f"speech model {model_id!r}: engine {spec.engine} needs a package not installed ({e.name})"
        ) from e
    synthesizer: Synthesizer = module.build(model_id, spec)
    return synthesizer


@dataclass(slots=True)
class SynthesisProvider:
    """One speech model's synthesizer with its own circuit breaker and concurrency gate."""

    model_id: str
    synthesizer: Synthesizer
    breaker: CircuitBreaker
    gate: ConcurrencyGate


@dataclass(frozen=True, slots=True)
class SpeechRoute:
    """The synthesis model a request resolved to and the chain that serves it."""

    model_id: str
    spec: SynthesisSpec
    chain: SynthesisChain


class SpeechStream:
    """A started synthesis: its first bytes already made, the rest as they come; close it when done."""

    def __init__(self, model_id: str, first: bytes, rest: AsyncIterator[bytes], exit_stack: AsyncExitStack):
        self.model_id = model_id
        self._first: bytes | None = first
        self._rest = rest
        self._exit_stack = exit_stack

    def __aiter__(self) -> SpeechStream:
        return self

    async def __anext__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return await anext(self._rest)

    async def aclose(self) -> None:
        """Stop the synthesis and give back its slot."""
        await self._exit_stack.aclose()


class SynthesisChain:
    """A speech model's own provider first, then its fallbacks."""

    def __init__(
        self, providers: list[SynthesisProvider], clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not providers:
            raise ValueError("a chain needs at least one provider")
        self.providers = providers
        self.clock = clock

    async def open(self, request: SpeechRequest) -> SpeechStream:
        """The first provider's stream that yields a first byte; raises the last failure when none does.

        A failure that says the request itself is at fault (UnknownVoice, a 400 from the upstream) is raised
        at once: another provider would refuse it too.
        """
        failure: Exception | None = None
        for index, provider in enumerate(self.providers):
            if not provider.breaker.try_acquire(self.clock()):
                what = f"speech model {provider.model_id!r}"
                failure = breaker_refusal(what, provider.breaker, self.clock())
                continue
            exit_stack = AsyncExitStack()
            try:
                await exit_stack.enter_async_context(provider.gate.slot())
                body = provider.synthesizer.synthesize(request)
                exit_stack.push_async_callback(_close, body)
                first = await _first_bytes(body)
            except ServerBusy as e:
                provider.breaker.release()
                await exit_stack.aclose()
                failure = e
                continue
            except UpstreamError as e:
                await exit_stack.aclose()
                if not e.transient:
                    provider.breaker.release()
                    raise
                provider.breaker.record_failure(self.clock())
                failure = e
                self._log_fallback(index, e)
                continue
            except BaseException:
                provider.breaker.release()
                await exit_stack.aclose()
                raise
            provider.breaker.record_success()
            return SpeechStream(provider.model_id, first, body, exit_stack)
        assert failure is not None
        raise failure

    def _log_fallback(self, index: int, error: UpstreamError) -> None:
        model_id = self.providers[index].model_id
        if index + 1 < len(self.providers):
            log.warning(
                "speech model %s failed (%s); trying %s", model_id, error, self.providers[index + 1].model_id
            )
        else:
            log.warning("speech model %s failed (%s)", model_id, error)


async def _first_bytes(body: AsyncIterator[bytes]) -> bytes:
    async for data in body:
        if data:
            return data
    return b""


async def _close(body: AsyncIterator[bytes]) -> None:
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        await aclose()


class SynthesisRouter:
    """The speech models' synthesizers, built once, started and stopped together."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.synthesizers: dict[str, Synthesizer] = {}
        providers: dict[str, SynthesisProvider] = {}
        for model_id, spec in catalog.speech_models.items():
            synthesizer = self.synthesizers[model_id] = build_synthesizer(model_id, spec)
            concurrency = spec.max_concurrency
            if concurrency is None and spec.engine == "espeak":
                concurrency = ESPEAK_CONCURRENCY
            providers[model_id] = SynthesisProvider(
                model_id,
                synthesizer,
                CircuitBreaker(spec.circuit_failures, spec.circuit_reset_s),
                ConcurrencyGate(model_id, concurrency, spec.max_queue, spec.max_queue_wait_s),
            )
        self.chains = {
            model_id: SynthesisChain([providers[m] for m in (model_id, *spec.fallbacks)])
            for model_id, spec in catalog.speech_models.items()
        }

    async def start(self) -> None:
        """Start every synthesizer."""
        await asyncio.gather(*(synthesizer.start() for synthesizer in self.synthesizers.values()))

    async def stop(self) -> None:
        """Stop every synthesizer."""
        await asyncio.gather(*(synthesizer.stop() for synthesizer in self.synthesizers.values()))

    @property
    def ready(self) -> bool:
        """True when every synthesizer has started."""
        return all(synthesizer.ready for synthesizer in self.synthesizers.values())

    def route(self, model_id: str | None) -> SpeechRoute:
        """The route for a requested synthesis model id or OpenAI name (raises ModelNotFound)."""
        canonical = self.catalog.resolve_speech(model_id)
        return SpeechRoute(canonical, self.catalog.speech_models[canonical], self.chains[canonical])
