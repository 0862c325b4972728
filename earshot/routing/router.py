"""The router: builds one engine per catalog model and picks the engine for a request."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from dataclasses import dataclass
from functools import partial

from earshot.engines.base import Engine
from earshot.engines.null import NullEngine
from earshot.engines.pocketsphinx import PocketsphinxEngine
from earshot.engines.pocketsphinx_decode import PocketsphinxConfig
from earshot.engines.spec import PLUGGED_ENGINES, WORKER_ENGINES, CatalogError, ModelSpec
from earshot.engines.workers import WorkerPool
from earshot.routing.breaker import CircuitBreaker
from earshot.routing.capacity import LIVE_PLACE_WAIT_S, LiveCapacity, measured_live_sessions
from earshot.routing.catalog import Catalog
from earshot.routing.chain import FallbackEngine
from earshot.routing.gate import ConcurrencyGate
from earshot.routing.provider import Provider
from earshot.routing.synthesis import SynthesisRouter, build_synthesizer


@dataclass(frozen=True, slots=True)
class Route:
    """The model a request resolved to and the engine that serves it."""

    model_id: str
    spec: ModelSpec
    engine: Engine


def build_engine(model_id: str, spec: ModelSpec, pool: WorkerPool) -> Engine:
    """The engine instance for one catalog entry."""
    if spec.engine == "pocketsphinx":
        return PocketsphinxEngine(PocketsphinxConfig.from_options(spec.options), pool, name=model_id)
    if spec.engine == "null":
        return NullEngine(name=model_id)
    if spec.engine in PLUGGED_ENGINES:
        # A plugged engine's module exposes `build(model_id, spec, pool) -> Engine`.
        try:
            module = importlib.import_module(f"earshot.engines.{spec.engine}")
        except ImportError as e:
            raise CatalogError(
                f"model {model_id!r}: engine {spec.engine} needs a package that is not installed ({e.name})"
            ) from e
        engine: Engine = module.build(model_id, spec, pool)
        return engine
    raise CatalogError(f"model {model_id!r}: unknown engine {spec.engine!r}")


def check_engines(catalog: Catalog) -> None:
    """Build every engine once without starting it, so a bad option, package or key is a one-line error."""
    pool = WorkerPool(1)
    try:
        for model_id, spec in catalog.models.items():
            build_engine(model_id, spec, pool)
        for model_id, synthesis in catalog.speech_models.items():
            build_synthesizer(model_id, synthesis)
    finally:
        pool.shutdown()


class Router:
    """Resolves model ids to their fallback chains; engines are started together and stopped together.

    `synthesis` does the same for the speech synthesis models.
    """

    def __init__(self, catalog: Catalog, pool: WorkerPool) -> None:
        self.catalog = catalog
        self.engines: dict[str, Engine] = {}
        self.live: dict[str, LiveCapacity] = {}
        self.gates: dict[str, ConcurrencyGate] = {}
        self._live_released = asyncio.Event()
        providers: dict[str, Provider] = {}
        for model_id, spec in catalog.models.items():
            engine = self.engines[model_id] = build_engine(model_id, spec, pool)
            breaker = CircuitBreaker(spec.circuit_failures, spec.circuit_reset_s)
            concurrency = spec.max_concurrency
            if concurrency is None and spec.engine in WORKER_ENGINES:
                concurrency = pool.size
            gate = self.gates[model_id] = ConcurrencyGate(
                model_id, concurrency, spec.max_queue, spec.max_queue_wait_s
            )
            # Live streams of local engines are bounded by live capacity, not by the one-shot gate.
            stream_gate = gate if spec.engine not in WORKER_ENGINES else ConcurrencyGate(model_id, None, 0)
            providers[model_id] = Provider(model_id, engine, breaker, gate, stream_gate)
            self.live[model_id] = LiveCapacity(
                model_id, spec.max_live_sessions, partial(measured_live_sessions, engine)
            )
        self.chains = {
            model_id: FallbackEngine([providers[m] for m in (model_id, *spec.fallbacks)])
            for model_id, spec in catalog.models.items()
        }
        self.synthesis = SynthesisRouter(catalog)

    async def start(self, model_id: str | None = None) -> None:
        """Start every engine, or only those of one model's chain (the model and its fallbacks)."""
        if model_id is None:
            chosen = list(self.engines)
            await self.synthesis.start()
        else:
            canonical = self.catalog.resolve(model_id)
            chosen = [canonical, *self.catalog.models[canonical].fallbacks]
        await asyncio.gather(*(self.engines[chosen_id].start() for chosen_id in chosen))

    async def stop(self) -> None:
        """Stop every engine."""
        await asyncio.gather(*(engine.stop() for engine in self.engines.values()), self.synthesis.stop())

    @property
    def ready(self) -> bool:
        """True when every engine has loaded."""
        return all(engine.ready for engine in self.engines.values()) and self.synthesis.ready

    def route(self, model_id: str | None) -> Route:
        """The route for a requested model id or alias (raises ModelNotFound)."""
        canonical = self.catalog.resolve(model_id)
        return Route(canonical, self.catalog.models[canonical], self.chains[canonical])

    def route_for(self, model_id: str | None, capability: str) -> Route | None:
        """The route for a model that has `capability`; for one that lacks it (a streaming-only provider
        asked for one-shot work, say), the route of its first fallback that has it; None when none does."""
        route = self.route(model_id)
        if capability in route.spec.capabilities:
            return route
        for fallback in route.spec.fallbacks:
            if capability in self.catalog.models[fallback].capabilities:
                return self.route(fallback)
        return None

    async def take_live(self, model_id: str, holder: object, wait_s: float = LIVE_PLACE_WAIT_S) -> str | None:
        """A live place for `holder` on the model, or else on the first fallback with room.

        Waits up to `wait_s` for a place to be given back; the model id that has it, or None (each full model
        then counts a refusal).
        """
        candidates = (model_id, *self.catalog.models[model_id].fallbacks)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            for candidate in candidates:
                if self.live[candidate].try_take(holder):
                    return candidate
            left_s = deadline - loop.time()
            if left_s <= 0:
                for candidate in candidates:
                    self.live[candidate].refused += 1
                return None
            self._live_released.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._live_released.wait(), left_s)

    def release_live(self, holder: object) -> None:
        """Give back whatever live place `holder` has."""
        for capacity in self.live.values():
            capacity.release(holder)
        self._live_released.set()
