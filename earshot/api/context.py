"""What every route needs from the running app, built once by the app factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

from fastapi import Request
from starlette.requests import HTTPConnection

from earshot.accounts.errors import ServerDraining
from earshot.api.admission import Accounts, Admission
from earshot.api.credentials import credential_from
from earshot.api.metrics import Metrics
from earshot.audio.pcm import Audio
from earshot.audio.vad_runner import VadRunner
from earshot.engines.base import EngineError, TranscribeOptions, Transcript, transcribe
from earshot.routing.gate import ServerBusy
from earshot.routing.router import Route, Router
from earshot.settings import Settings
from earshot.store.records import KeyRecord
from earshot.store.sessions import SessionRepository
from earshot.store.transcripts import TranscriptRepository
from earshot.streaming.engine_feed import EngineProgress
from earshot.voice.chat import ChatModels
from earshot.voice.turn_lock import TurnLocks

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Gateway:
    """The shared objects of one running server."""

    settings: Settings
    router: Router
    decode_limiter: asyncio.Semaphore
    accounts: Accounts
    metrics: Metrics
    vad: VadRunner
    transcripts: TranscriptRepository
    chat: ChatModels
    sessions: SessionRepository
    turn_locks: TurnLocks
    # Set when the server starts shutting down: live sessions finish their turn, say why, and close.
    draining: asyncio.Event = field(default_factory=asyncio.Event)
    live_sessions: int = 0
    no_live_sessions: asyncio.Event = field(default_factory=asyncio.Event)
    # What every live session's engine has got through: a flush waits while it grows.
    engine_progress: EngineProgress = field(default_factory=EngineProgress)
    # Work a session hands off as it ends (stopping an engine stream no one waits for), awaited at shutdown.
    cleanups: set[asyncio.Task[None]] = field(default_factory=set)

    def clean_up_later(self, work: Awaitable[None], what: str) -> None:
        """Run `work` in the background, logging its failure; shutdown waits for it."""

        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("%s failed", what)

        task = asyncio.get_running_loop().create_task(run())
        self.cleanups.add(task)
        task.add_done_callback(self.cleanups.discard)

    async def finish_cleanups(self, timeout_s: float) -> None:
        """Wait (up to `timeout_s`) for the work sessions handed off as they ended."""
        if self.cleanups:
            await asyncio.wait(set(self.cleanups), timeout=timeout_s)

    async def transcribe(self, route: Route, audio: Audio, options: TranscribeOptions) -> Transcript:
        """A one-shot transcription on the routed model, timed into the engine latency metric.

        A failure (`EngineError`, or `ServerBusy` from a full model) is logged and raised as it came, for the
        caller to render in its protocol's shape.
        """
        started = time.perf_counter()
        try:
            transcript = await transcribe(route.engine, audio, options)
        except (EngineError, ServerBusy) as e:
            log.error("model %s failed: %s", route.model_id, e)
            raise
        self.metrics.engine_latency.labels(route.model_id).observe(time.perf_counter() - started)
        return transcript

    def live_session_started(self) -> None:
        self.live_sessions += 1
        self.no_live_sessions.clear()

    def live_session_ended(self) -> None:
        self.live_sessions -= 1
        if not self.live_sessions:
            self.no_live_sessions.set()

    async def drain(self, timeout_s: float) -> None:
        """Refuse new work, ask every live session to end, and wait (up to `timeout_s` in all) until they have
        and the work they handed off is done."""
        self.draining.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self.live_sessions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.no_live_sessions.wait(), timeout_s)
        await self.finish_cleanups(max(0.0, deadline - loop.time()))

    async def admit(
        self, connection: HTTPConnection, *, bucket: str, route: str, ip_rpm: int | None = None
    ) -> Admission:
        """Admit an HTTP request or WebSocket handshake by the key it carries (metered from here on)."""
        if self.draining.is_set():
            raise ServerDraining()
        peer = connection.client.host if connection.client else "unknown"
        admission = await self.accounts.admit(_credential(connection), peer, bucket, route, ip_rpm)
        connection.state.key_id = admission.key_id
        return admission

    async def identify(self, connection: HTTPConnection) -> KeyRecord | None:
        """The caller's key for an unmetered request (None while the server is anonymous)."""
        key = await self.accounts.identify(_credential(connection))
        connection.state.key_id = key_id_of(key)
        return key


def key_id_of(key: KeyRecord | None) -> str | None:
    """The id of the caller's key, which owns what the caller stores (None while the server is anonymous)."""
    return key.id if key is not None else None


def _credential(connection: HTTPConnection) -> str | None:
    is_websocket = connection.scope["type"] == "websocket"
    subprotocols = connection.scope.get("subprotocols", []) if is_websocket else []
    return credential_from(connection.headers, connection.query_params, subprotocols)


async def get_gateway(request: Request) -> Gateway:
    """FastAPI dependency: the app's Gateway."""
    gateway: Gateway = request.app.state.gateway
    return gateway
