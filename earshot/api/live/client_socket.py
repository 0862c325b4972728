"""The client's socket of a live session, as the local shell and the relay both drive it.

Ends the session once (the first reason wins), reads the client's messages within the size limit, and
accepts, sends and closes without failing when the client is already gone.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from earshot.accounts.errors import InsufficientCredits
from earshot.api.admission import Admission
from earshot.api.context import Gateway
from earshot.api.live.actions import EndReason

# Close codes a client uses when it ends a session on purpose; anything else is a dropped connection.
NORMAL_CLOSE_CODES = frozenset({1000, 1001})
# How long an ending session waits for the client message it is carrying out.
MESSAGE_FINISH_TIMEOUT_S = 5.0
# What sending on or closing a socket raises once the client has gone.
SOCKET_GONE_ERRORS = (OSError, RuntimeError, WebSocketDisconnect)


class ClientSocket:
    """One admitted client's socket: ending, reading, sending and closing."""

    def __init__(self, websocket: WebSocket, gateway: Gateway, admission: Admission) -> None:
        self.websocket = websocket
        self.gateway = gateway
        self.admission = admission
        self._ended: asyncio.Future[tuple[EndReason, str]] = asyncio.get_running_loop().create_future()
        self._normal_close = False
        # Waiting for the client's next message (not carrying one out), so stopping can simply cancel.
        self._awaiting_client = False
        self._send_lock = asyncio.Lock()
        self._metered_ms = 0

    def end(self, reason: EndReason, message: str) -> None:
        """End the session for `reason` (the first reason given wins)."""
        if not self._ended.done():
            self._ended.set_result((reason, message))

    async def _meter_up_to(self, total_ms: int) -> None:
        """Meter the audio heard since the last call (`total_ms` in all); out of credit ends the session."""
        newly_ms, self._metered_ms = total_ms - self._metered_ms, total_ms
        try:
            await self.gateway.accounts.meter.consume(self.admission.ticket, newly_ms)
        except InsufficientCredits:
            self.end("insufficient_credits", "this API key has run out of credit seconds")

    async def _accept(self, subprotocol: str | None) -> None:
        if self.websocket.application_state == WebSocketState.CONNECTING:
            await self.websocket.accept(subprotocol=subprotocol)

    async def _next_message(self) -> Message | None:
        """The client's next message; None once it has gone (or sent too big a one), the session ended."""
        self._awaiting_client = True
        message = await self.websocket.receive()
        self._awaiting_client = False
        if message["type"] == "websocket.disconnect":
            code = int(message.get("code") or 1005)
            self._normal_close = code in NORMAL_CLOSE_CODES
            self._disconnected(code)
            return None
        limit = self.gateway.settings.ws_max_message_bytes
        text = message.get("text")
        size = len(text) if text is not None else len(message.get("bytes") or b"")
        if size > limit:
            await self._close(1009, f"message larger than {limit} bytes")
            self._client_gone("message too big")
            return None
        return message

    def _disconnected(self, code: int) -> None:
        """The client's socket closed with `code`."""
        self._client_gone("the client closed the connection")

    def _client_gone(self, message: str) -> None:
        """The client is gone: it closed its socket or was cut off."""
        self.end("client_closed", message)

    async def _send(self, message: str | bytes) -> None:
        async with self._send_lock:
            if isinstance(message, str):
                await self.websocket.send_text(message)
            else:
                await self.websocket.send_bytes(message)

    async def _close(self, code: int, reason: str) -> None:
        if self.websocket.application_state == WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(*SOCKET_GONE_ERRORS):
            await self.websocket.close(code, reason)
