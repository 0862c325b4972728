"""The two-socket shell of a relayed `/v1/realtime` session: the client's socket and the provider's.

The relay logic is `api/realtime_relay.py`; this shell connects upstream with earshot's own provider key (the
client's key never leaves earshot), meters the audio the client appends, and ends the session on revocation,
exhausted credit, drain or expiry through the same watchdog as the local live path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from earshot.api.admission import Admission
from earshot.api.context import Gateway
from earshot.api.live.actions import OUTCOME_OF_END, CloseSocket, EndReason, Send
from earshot.api.live.client_socket import MESSAGE_FINISH_TIMEOUT_S, SOCKET_GONE_ERRORS, ClientSocket
from earshot.api.live.models import ModelChooser
from earshot.api.live.watch import SessionWatch
from earshot.api.realtime import server_events as events
from earshot.api.realtime.endings import realtime_limits
from earshot.api.realtime.relay import Metered, RealtimeRelay, RelayAction, ToUpstream
from earshot.api.realtime.session import Dialect, RealtimeSettings
from earshot.engines.base import UpstreamError
from earshot.engines.openai_wire import upstream_realtime_target
from earshot.engines.realtime_upstream import connect
from earshot.engines.upstream import closed_error
from earshot.store.records import Outcome
from earshot.streaming.live_config import Expiry, LiveConfig, SessionClock

log = logging.getLogger(__name__)


def relay_for(
    websocket: WebSocket,
    gateway: Gateway,
    admission: Admission,
    chooser: ModelChooser,
    dialect: Dialect,
    defaults: LiveConfig,
) -> RelaySocket | None:
    """The relay for a session on a provider's Realtime socket with no fallbacks; None otherwise."""
    route = chooser.route
    # A model with fallbacks goes through earshot's own live path, whose engine stream can fail over.
    if route is None or route.spec.fallbacks:
        return None
    target = upstream_realtime_target(gateway.router.engines.get(route.model_id))
    if target is None:
        return None
    settings = RealtimeSettings(id=events.new_session_id(), model=route.model_id)
    relay = RealtimeRelay(settings, dialect, target, route.model_id, gateway.router.catalog.resolve, chooser)
    return RelaySocket(websocket, gateway, admission, relay, defaults)


class RelaySocket(ClientSocket):
    """The two sockets of one relayed session, from accept to the usage outcome."""

    def __init__(
        self,
        websocket: WebSocket,
        gateway: Gateway,
        admission: Admission,
        relay: RealtimeRelay,
        defaults: LiveConfig,
    ) -> None:
        super().__init__(websocket, gateway, admission)
        self.relay = relay
        self._limits = realtime_limits(defaults)
        self._upstream: ClientConnection | None = None
        # The provider failed (unreachable, refused us, closed the socket): recorded as upstream_error.
        self._provider_failed = False
        # The client closed its socket or was cut off: no one is left to tell how the session ended.
        self._caller_gone = False
        self._session_clock = SessionClock()
        self._appended_ms = 0.0

    async def run(self, subprotocol: str | None) -> Outcome:
        """Connect upstream, relay both ways until the session ends; returns the usage outcome."""
        await self._accept(subprotocol)
        watch = SessionWatch(self.gateway, self.admission, self.end, self._expired)
        watch.start()
        pumps: list[asyncio.Task[None]] = []
        try:
            try:
                self._upstream = await connect(self.relay.target)
            except UpstreamError as e:
                log.warning(
                    "realtime relay for model %s could not connect upstream: %s", self.relay.model_id, e
                )
                self._provider_failed = True
                self.end("error", str(e))
            else:
                await self._to_upstream(self.relay.upstream_opened())
                pumps = [asyncio.create_task(self._from_upstream()), asyncio.create_task(self._from_client())]
            reason, message = await asyncio.shield(self._ended)
        finally:
            watch.stop()
            await self._stop(pumps)
        await self._finish(reason, message)
        if reason == "client_closed" and self._normal_close:
            return "ok"
        if reason == "error" and self._provider_failed:
            return "upstream_error"
        return OUTCOME_OF_END[reason]

    def _expired(self) -> Expiry | None:
        return self._session_clock.expired(self._limits)

    async def _stop(self, pumps: list[asyncio.Task[None]]) -> None:
        if pumps and not self._awaiting_client:
            # A client event being metered and forwarded is let finish, so no audio goes unmetered.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(pumps[1]), MESSAGE_FINISH_TIMEOUT_S)
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        if self._upstream is not None:
            await self._upstream.close()

    async def _finish(self, reason: EndReason, message: str) -> None:
        if self._caller_gone or reason == "client_closed":
            return
        try:
            for action in self.relay.ending(reason, message):
                if isinstance(action, Send) and isinstance(action.message, str):
                    await self._send(action.message)
                elif isinstance(action, CloseSocket):
                    await self._close(action.code, action.reason)
        except SOCKET_GONE_ERRORS as e:
            log.debug("relayed session ended while the socket was closing: %s", e)
        finally:
            await self._close(1000, "")

    def _client_gone(self, message: str) -> None:
        self._caller_gone = True
        super()._client_gone(message)

    async def _from_client(self) -> None:
        while True:
            message = await self._next_message()
            if message is None:
                return
            self._session_clock.touch()
            text = message.get("text")
            actions = self.relay.from_client(text) if text is not None else self.relay.from_client_bytes()
            for action in actions:
                if isinstance(action, Metered):
                    self._appended_ms += action.audio_ms
                    await self._meter_up_to(int(self._appended_ms))
                elif isinstance(action, ToUpstream):
                    await self._to_upstream([action])
                elif isinstance(action.message, str):
                    await self._send(action.message)
                if self._ended.done():
                    return

    async def _to_upstream(self, actions: list[RelayAction]) -> None:
        assert self._upstream is not None
        for action in actions:
            if isinstance(action, ToUpstream):
                try:
                    await self._upstream.send(action.message)
                except ConnectionClosed:
                    self._upstream_closed()
                    return

    async def _from_upstream(self) -> None:
        assert self._upstream is not None
        try:
            async for raw in self._upstream:
                if not isinstance(raw, str):
                    continue
                for action in self.relay.from_upstream(raw):
                    if isinstance(action, Send) and isinstance(action.message, str):
                        await self._send(action.message)
        except ConnectionClosed:
            pass
        except SOCKET_GONE_ERRORS as e:
            log.debug("could not deliver a relayed event: %s", e)
            self._client_gone("the connection was lost")
            return
        self._upstream_closed()

    def _upstream_closed(self) -> None:
        if self._ended.done() or self._upstream is None:
            return
        error = closed_error(
            self.relay.target.provider, self._upstream.close_code, self._upstream.close_reason or ""
        )
        log.warning("realtime relay for model %s lost its upstream: %s", self.relay.model_id, error)
        self._provider_failed = True
        self.end("error", str(error))
