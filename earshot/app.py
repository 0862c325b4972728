"""The app factory: builds the store, accounts, engines and routes from Settings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from redis.asyncio import Redis
from starlette.middleware.cors import CORSMiddleware

from earshot import __version__
from earshot.accounts.keys import KeyRing
from earshot.accounts.limits import MemorySessionGate, RateLimiter, RedisSessionGate, limit_storage
from earshot.accounts.metering import Meter
from earshot.accounts.posture import check_anonymous_posture
from earshot.accounts.revocation import RevocationFeed
from earshot.api import admin, health, metrics, usage
from earshot.api.access_log import AccessLogMiddleware
from earshot.api.admission import Accounts
from earshot.api.context import Gateway
from earshot.api.credentials import redact_server_logs
from earshot.api.deepgram import live as deepgram_live
from earshot.api.deepgram import prerecorded as deepgram_prerecorded
from earshot.api.managed import endpoint as managed
from earshot.api.metrics import Metrics
from earshot.api.openai import rest as openai_rest
from earshot.api.openai import speech as openai_speech
from earshot.api.openai.errors import install_error_handlers
from earshot.api.realtime import endpoint as openai_realtime
from earshot.api.sessions import endpoint as sessions
from earshot.api.transcripts import endpoint as transcripts
from earshot.api.web import mount_web_page
from earshot.audio.vad import SileroModel
from earshot.audio.vad_runner import VadRunner
from earshot.dials import DialBoard, Dials
from earshot.engines.workers import WorkerPool
from earshot.routing.catalog import Catalog
from earshot.routing.router import Router
from earshot.settings import Settings
from earshot.store.db import Database
from earshot.store.repositories import DialRepository, KeyRepository, UsageRepository
from earshot.store.sessions import SessionRepository
from earshot.store.transcripts import TranscriptRepository
from earshot.voice.chat import ChatModels
from earshot.voice.turn_lock import MemoryTurnLocks, RedisTurnLocks

log = logging.getLogger(__name__)

# How long past the maximum session length a running usage record must be before it counts as abandoned.
ABANDONED_MARGIN_S = 600.0


def build_accounts(settings: Settings, db: Database, redis: Redis | None, metrics: Metrics) -> Accounts:
    """Keys, limits, metering and dials over the given store and (optional) Redis."""
    storage = limit_storage(settings.redis_url, settings.redis_prefix)
    gate = RedisSessionGate(redis, settings.redis_prefix) if redis is not None else MemorySessionGate()
    return Accounts(
        keyring=KeyRing(KeyRepository(db)),
        limiter=RateLimiter(storage),
        gate=gate,
        meter=Meter(UsageRepository(db)),
        dials=DialBoard(DialRepository(db), Dials.from_settings(settings)),
        revocations=RevocationFeed(redis, settings.redis_prefix),
        metrics=metrics,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """A ready-to-serve earshot ASGI app; the store is migrated and engines load in its lifespan."""
    settings = settings or Settings()
    catalog = Catalog.load(settings.config)
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            db = Database(settings.database_url)
            stack.push_async_callback(db.dispose)
            await db.upgrade()
            redis: Redis | None = None
            if settings.redis_url:
                redis = Redis.from_url(settings.redis_url)
                stack.push_async_callback(redis.aclose)
                await redis.ping()
            accounts = build_accounts(settings, db, redis, app_metrics)
            await check_anonymous_posture(settings, accounts.keyring.repository)
            await accounts.dials.start()
            stack.push_async_callback(accounts.dials.stop)
            await accounts.meter.sweep_abandoned(accounts.dials.current.max_session_s + ABANDONED_MARGIN_S)
            await accounts.revocations.start()
            stack.push_async_callback(accounts.revocations.stop)
            stack.push_async_callback(accounts.meter.drain)

            pool = WorkerPool(settings.engine_workers, settings.max_worker_rss_mb or None)
            stack.push_async_callback(asyncio.to_thread, pool.shutdown)
            router = Router(catalog, pool)
            stack.push_async_callback(router.stop)
            app_metrics.watch_models(router)
            decode_limiter = asyncio.Semaphore(settings.decode_concurrency)
            vad = VadRunner(SileroModel.shared)
            stack.callback(vad.close)
            chat = ChatModels(catalog)
            stack.push_async_callback(chat.aclose)
            app.state.gateway = Gateway(
                settings,
                router,
                decode_limiter,
                accounts,
                app_metrics,
                vad,
                TranscriptRepository(db),
                chat,
                SessionRepository(db),
                RedisTurnLocks(redis, settings.redis_prefix) if redis is not None else MemoryTurnLocks(),
            )
            # Engines load in the background: /healthz answers at once, /readyz turns 200 once they're loaded.
            starting = asyncio.create_task(_start_engines(router))
            stack.callback(starting.cancel)
            log.info("earshot %s: database %s, redis %s", __version__, db.safe_url, _redis_label(settings))
            yield

    redact_server_logs()
    app = FastAPI(title="earshot", version=__version__, lifespan=lifespan)
    app.state.metrics = app_metrics
    install_error_handlers(app)
    app.add_middleware(AccessLogMiddleware, metrics=app_metrics)
    if settings.cors_origins:
        _add_cors(app, settings.cors_origins)
    routers = (
        health,
        metrics,
        openai_rest,
        openai_speech,
        openai_realtime,
        managed,
        deepgram_live,
        deepgram_prerecorded,
        transcripts,
        sessions,
    )
    for module in (*routers, usage, admin):
        app.include_router(module.router)
    mount_web_page(app)
    return app


def _add_cors(app: FastAPI, origins: list[str]) -> None:
    options: dict[str, Any] = {
        "allow_methods": ["*"],
        "allow_headers": ["*"],
        "expose_headers": ["x-request-id", "retry-after", "x-should-retry"],
        "max_age": 600,
    }
    if origins == ["*"]:
        app.add_middleware(CORSMiddleware, allow_origins=["*"], **options)
    else:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_credentials=True, **options)


def _redis_label(settings: Settings) -> str:
    return "configured" if settings.redis_url else "none (in-process limits)"


async def _start_engines(router: Router) -> None:
    try:
        await router.start()
    except Exception:
        log.exception("engines failed to load; /readyz stays 503")
        return
    log.info("earshot %s ready: models %s", __version__, ", ".join(router.catalog.public_ids()))
