"""The router: builds one engine per catalog model and picks the engine for a request."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from earshot.engines.base import Engine
from earshot.engines.null import NullEngine
from earshot.engines.pocketsphinx import PocketsphinxConfig, PocketsphinxEngine
from earshot.engines.workers import WorkerPool
from earshot.routing.catalog import Catalog, ModelSpec


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
    raise ValueError(f"unknown engine {spec.engine!r}")


class Router:
    """Resolves model ids to engines; engines are started together and stopped together."""

    def __init__(self, catalog: Catalog, pool: WorkerPool) -> None:
        self.catalog = catalog
        self.engines: dict[str, Engine] = {
            model_id: build_engine(model_id, spec, pool) for model_id, spec in catalog.models.items()
        }

    async def start(self) -> None:
        """Start every engine."""
        await asyncio.gather(*(engine.start() for engine in self.engines.values()))

    async def stop(self) -> None:
        """Stop every engine."""
        await asyncio.gather(*(engine.stop() for engine in self.engines.values()))

    @property
    def ready(self) -> bool:
        """True when every engine has loaded."""
        return all(engine.ready for engine in self.engines.values())

    def route(self, model_id: str | None) -> Route:
        """The route for a requested model id or alias (raises ModelNotFound)."""
        canonical = self.catalog.resolve(model_id)
        return Route(canonical, self.catalog.models[canonical], self.engines[canonical])
