"""The socket shell every live protocol shares once a session is admitted: carry out the protocol's actions,
meter, cut off.

The protocol class decides what messages mean; this shell owns the socket, the LiveSession, the usage
ticket and the watchdog (idle timeout, maximum duration, revocation), and ends every session exactly once.
Admission and the usage record are `api/live_admission.py`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from starlette.websockets import WebSocket

from earshot.api.admission import Admission
from earshot.api.context import Gateway
from earshot.api.live.actions import (
    OUTCOME_OF_END,
    Action,
    AppendAudio,
    AppendEncoded,
    ChannelAction,
    Clear,
    CloseSocket,
    Commit,
    Configure,
    EndReason,
    EndStream,
    LiveProtocol,
    Send,
    WarnsOfLowCredit,
)
from earshot.api.live.client_socket import MESSAGE_FINISH_TIMEOUT_S, SOCKET_GONE_ERRORS, ClientSocket
from earshot.api.live.models import ModelChooser as ModelChooser
from earshot.api.live.watch import SessionWatch
from earshot.audio.decode import AudioDecodeError, ContainerStream
from earshot.engines.base import EngineError, TranscribeOptions
from earshot.store.records import Outcome
from earshot.streaming.live_config import Expiry, LiveConfig
from earshot.streaming.session import LiveSession

log = logging.getLogger(__name__)

SERVER_RESTART_CODE = 1012
# How many times the flush timeout an ending session's flush may go without progress of its own while other
# sessions' work progresses (its results wait behind theirs, but not for ever).
FLUSH_CAP_FACTOR = 12
# Endings after which the caller still wants the rest of its text; after the others it is dropped.
FLUSHED_ENDINGS: frozenset[EndReason] = frozenset({"finished", "idle_timeout", "max_duration", "shutdown"})


class LiveSocket(ClientSocket):
    """One admitted live connection from accept to its usage record."""

    def __init__(
        self,
        websocket: WebSocket,
        gateway: Gateway,
        admission: Admission,
        protocol: LiveProtocol,
        chooser: ModelChooser,
    ) -> None:
        super().__init__(websocket, gateway, admission)
        self.protocol = protocol
        self.chooser = chooser
        self._model_id = chooser.route.model_id if chooser.route is not None else ""
        # The server closed the socket itself (shutting down without a drain): no one is left to tell.
        self._server_closed = False
        self.session = self._new_session(protocol.live_config(), protocol.transcribe_options())
        self._pumps: set[asyncio.Task[None]] = set()
        self._warned_low_credit = False
        # Checked once: an isinstance against a runtime-checkable Protocol is slow for every append.
        self._credit_warner = protocol if isinstance(protocol, WarnsOfLowCredit) else None
        self._container: ContainerStream | None = None
        self._waiting_on_engine = False

    def _new_session(self, config: LiveConfig, options: TranscribeOptions) -> LiveSession:
        assert self.chooser.route is not None
        return LiveSession(
            self.chooser.route.engine,
            options,
            config,
            vad_stream=self.gateway.vad.stream,
            progress=self.gateway.engine_progress,
        )

    async def run(self, subprotocol: str | None) -> Outcome:
        """Serve the connection until it ends; returns the usage outcome."""
        await self._accept(subprotocol)
        watch = SessionWatch(self.gateway, self.admission, self.end, self._expiry)
        watch.start()
        self._start_pump()
        receiver = asyncio.create_task(self._receive())
        try:
            await self._execute(self.protocol.opened())
            reason, message = await asyncio.shield(self._ended)
        finally:
            watch.stop()
            await self._stop_receiving(receiver)
        await self._finish(reason, message)
        return OUTCOME_OF_END[reason] if reason != "client_closed" or not self._normal_close else "ok"

    def _expiry(self) -> Expiry | None:
        if self._waiting_on_engine or self.session.owes_results:
            # The client's message waits on the engine's backlog, or the client waits for results the engine
            # has yet to give: the silence is the server's, not the client's.
            self.session.touch()
        return self.session.expired()

    async def _finish(self, reason: EndReason, message: str) -> None:
        caller_gone = reason == "client_closed" or self._server_closed
        flush = reason in FLUSHED_ENDINGS and not caller_gone
        try:
            if flush:
                await self._flush_within(self.gateway.settings.flush_timeout_s)
            else:
                self._abandon_session()
                await asyncio.wait(self._pumps) if self._pumps else None
            if not caller_gone:
                await self._execute(self.protocol.ending(reason, message), finishing=True)
        except SOCKET_GONE_ERRORS as e:
            log.debug("live session ended while the socket was closing: %s", e)
        finally:
            if self._container is not None:
                self._container.close()
            if not caller_gone:
                await self._close(1000, "")

    async def _flush_within(self, stall_s: float) -> None:
        """Give the caller the rest of its text while the engine keeps getting through it.

        A client that streamed faster than real time, or a busy server, may leave a backlog: it is worked off
        as long as the engine makes progress, however long that takes, but the session ends without the rest
        once the engine has done nothing for `stall_s`, or nothing of this session's for FLUSH_CAP_FACTOR
        times that, so a stuck engine or stream never holds the record.
        """
        loop = asyncio.get_running_loop()
        flushing = asyncio.ensure_future(self._flush_and_deliver())
        seen, own_seen = self.session.progress, self.session.own_progress
        own_deadline = loop.time() + stall_s * FLUSH_CAP_FACTOR
        while not flushing.done():
            await asyncio.wait({flushing}, timeout=max(0.0, min(stall_s, own_deadline - loop.time())))
            if flushing.done():
                break
            if self.session.own_progress != own_seen:
                own_seen = self.session.own_progress
                own_deadline = loop.time() + stall_s * FLUSH_CAP_FACTOR
            if self.session.progress == seen or loop.time() >= own_deadline:
                log.warning(
                    "live session's engine stalled while flushing; ending without the rest of its text"
                )
                flushing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flushing
                self._abandon_session()
                await asyncio.wait(self._pumps) if self._pumps else None
                return
            seen = self.session.progress
        flushing.result()

    async def _flush_and_deliver(self) -> None:
        await self._decode_container(to_end=True)
        await self.session.close(flush=True)
        if self._pumps:
            # asyncio.wait, not gather: giving up on the flush must not cancel the pumps.
            await asyncio.wait(self._pumps)

    def _abandon_session(self) -> None:
        """End the session without waiting for its engine; the engine is stopped in the background."""
        stopping = self.session.abandon()
        if stopping is not None:
            self.gateway.clean_up_later(stopping, "stopping an abandoned engine stream")

    async def _stop_receiving(self, receiver: asyncio.Task[None]) -> None:
        # A message being carried out is let finish (cut short, it could leave credit debited but
        # unrecorded), unless it waits on a backlogged engine; the wait for the next message is cancelled.
        if not self._awaiting_client and not self._waiting_on_engine and self._ended.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(receiver), MESSAGE_FINISH_TIMEOUT_S)
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver

    async def _receive(self) -> None:
        while True:
            message = await self._next_message()
            if message is None:
                return
            self.session.touch()
            text = message.get("text")
            if text is not None:
                actions = self.protocol.receive_text(text)
            else:
                actions = self.protocol.receive_bytes(message.get("bytes") or b"")
            await self._execute(actions)
            if self._ended.done():
                return

    def _disconnected(self, code: int) -> None:
        if code == SERVER_RESTART_CODE:
            self._server_closed = True
            self.end("shutdown", "the server is shutting down")
        else:
            super()._disconnected(code)

    async def _execute(self, actions: list[Action], finishing: bool = False) -> None:
        for action in actions:
            if isinstance(action, Send):
                await self._send(action.message)
            elif isinstance(action, AppendAudio):
                await self._append(action.pcm16)
            elif isinstance(action, AppendEncoded):
                await self._append_encoded(action.data)
            elif isinstance(action, Commit):
                await self._decode_container()
                await self._on_engine(self.session.commit())
            elif isinstance(action, Clear):
                await self.session.clear()
            elif isinstance(action, Configure):
                await self._configure(action)
            elif isinstance(action, EndStream):
                self.end("finished", "the client has no more audio")
            elif isinstance(action, CloseSocket):
                self.end("client_closed" if action.code < 1008 else "error", action.reason)
                await self._close(action.code, action.reason)
            elif isinstance(action, ChannelAction):
                await self._carry_out(action)
            if self._ended.done() and not finishing:
                return

    async def _carry_out(self, action: ChannelAction) -> None:
        """A protocol's own action; a subclass serving that protocol carries it out."""
        raise NotImplementedError(f"{type(self).__name__} cannot carry out {type(action).__name__}")

    async def _append(self, pcm16: bytes) -> None:
        self.chooser.locked = True
        try:
            await self._on_engine(self.session.append(pcm16))
        finally:
            # Billing counts the audio received, even when ending the session cut its engine work short.
            await self._meter_up_to(self.session.audio_ms)
        await self._warn_if_credits_low()

    async def _on_engine(self, work: Awaitable[None]) -> None:
        """Carry out session work that may wait for a backlogged engine (an ending need not wait for it)."""
        self._waiting_on_engine = True
        try:
            await work
        finally:
            self._waiting_on_engine = False

    async def _append_encoded(self, data: bytes) -> None:
        if self._container is None:
            loop = asyncio.get_running_loop()

            def undecodable(error: AudioDecodeError) -> None:
                loop.call_soon_threadsafe(self.end, "bad_audio", str(error))

            self._container = ContainerStream(on_error=undecodable)
        try:
            pcm16 = self._container.feed(data)
        except AudioDecodeError as e:
            self.end("bad_audio", str(e))
            return
        if pcm16:
            await self._append(pcm16)

    async def _decode_container(self, to_end: bool = False) -> None:
        """Append what the container decoder has yet to give: all it was fed, or all there is at the end."""
        if self._container is None:
            return
        try:
            pcm16 = await (self._container.finish() if to_end else self._container.settle())
        except AudioDecodeError as e:
            self.end("bad_audio", str(e))
            return
        if pcm16:
            await self._append(pcm16)

    async def _warn_if_credits_low(self) -> None:
        warner = self._credit_warner
        if self._warned_low_credit or warner is None:
            return
        ticket = self.admission.ticket
        threshold_ms = round(self.gateway.accounts.dials.current.credits_low_seconds * 1000)
        if self.gateway.accounts.meter.credits_low(ticket, threshold_ms):
            self._warned_low_credit = True
            seconds_left = (ticket.credit_left_ms or 0) / 1000
            await self._execute(warner.credits_low(seconds_left), finishing=True)

    async def _configure(self, action: Configure) -> None:
        if action.model != self._model_id:
            self._model_id = action.model
            await self.session.close(flush=False)
            self.session = self._new_session(action.config, action.options)
            self._start_pump()
            return
        if action.config.input_rate_hz != self.session.config.input_rate_hz or (
            action.config.vad != self.session.config.vad
        ):
            self.session.reconfigure(action.config)
        self.session.options = action.options

    def _start_pump(self) -> None:
        pump = asyncio.create_task(self._pump(self.session))
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)

    async def _pump(self, session: LiveSession) -> None:
        try:
            async for event in session.events():
                for action in self.protocol.on_event(event):
                    if isinstance(action, Send):
                        await self._send(action.message)
                    elif isinstance(action, ChannelAction):
                        await self._carry_out(action)
        except SOCKET_GONE_ERRORS as e:
            log.debug("could not deliver a live event: %s", e)
            self.end("client_closed", "the connection was lost")
        except EngineError as e:
            log.warning("live engine failed: %s", e)
            self.end("error", "the transcription engine failed")
