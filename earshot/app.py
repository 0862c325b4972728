"""The app factory: builds the engines, worker pool and routes from Settings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from earshot import __version__
from earshot.api import health, openai_rest
from earshot.api.access_log import AccessLogMiddleware
from earshot.api.context import Gateway
from earshot.api.errors import install_error_handlers
from earshot.engines.workers import WorkerPool
from earshot.routing.catalog import Catalog
from earshot.routing.router import Router
from earshot.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A ready-to-serve earshot ASGI app; engines load in its lifespan."""
    settings = settings or Settings()
    catalog = Catalog.load(settings.config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = WorkerPool(settings.engine_workers)
        router = Router(catalog, pool)
        app.state.gateway = Gateway(settings, router, asyncio.Semaphore(settings.decode_concurrency))
        # Engines load in the background: /healthz answers at once and /readyz turns 200 when they're loaded.
        starting = asyncio.create_task(_start_engines(router))
        try:
            yield
        finally:
            starting.cancel()
            await router.stop()
            await asyncio.to_thread(pool.shutdown)

    app = FastAPI(title="earshot", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(AccessLogMiddleware)
    app.include_router(health.router)
    app.include_router(openai_rest.router)
    return app


async def _start_engines(router: Router) -> None:
    try:
        await router.start()
    except Exception:
        log.exception("engines failed to load; /readyz stays 503")
        return
    log.info("earshot %s ready: models %s", __version__, ", ".join(router.catalog.public_ids()))
