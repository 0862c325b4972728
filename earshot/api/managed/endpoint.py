"""earshot's own live protocol: WS /ws/transcribe, authenticated by its first message.

The client sends `auth` (an earshot key and the stream's config) within `ws_auth_timeout_s`; the endpoint
answers with `ready` or a refusal, then serves `ManagedProtocol` (protocol.py) in the live socket shell.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import APIRouter, WebSocket

from earshot.api.admission import Admission
from earshot.api.live.actions import Action
from earshot.api.live.admission import LiveRequest, LiveRoute, LiveRunner, ModelChooser, refuse, serve_live
from earshot.api.managed import wire
from earshot.api.managed.protocol import ManagedProtocol
from earshot.streaming.live_config import LiveConfig

router = APIRouter()


MANAGED_ROUTE = LiveRoute(path="/ws/transcribe", bucket="managed")


@dataclass(frozen=True, slots=True)
class ManagedEndpoint:
    """How `serve_live` builds and refuses a managed session, with the config its `auth` message gave."""

    config: wire.StreamConfig

    def new_protocol(self, chooser: ModelChooser, model_id: str, defaults: LiveConfig) -> ManagedProtocol:
        return ManagedProtocol(self.config, model_id, defaults)

    def refusal(self, code: str, message: str) -> list[Action]:
        return ManagedProtocol.refusal(code, message)

    def relay(self, chooser: ModelChooser, admission: Admission, defaults: LiveConfig) -> LiveRunner | None:
        return None


async def first_message(websocket: WebSocket, timeout_s: float) -> wire.AuthMessage | None:
    """The client's `auth` message; None (after saying why, and closing) when it doesn't come or is bad."""
    try:
        message = await asyncio.wait_for(websocket.receive(), timeout_s)
    except TimeoutError:
        error = wire.WireError("AUTH_FAILED", f"no auth message within {timeout_s:g} s")
        await refuse(websocket, None, ManagedProtocol.refused(error))
        return None
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    try:
        if text is None:
            raise wire.WireError("BAD_REQUEST", "send the auth message (JSON text) before any audio")
        return wire.parse_auth(text)
    except wire.WireError as e:
        await refuse(websocket, None, ManagedProtocol.refused(e))
        return None


@router.websocket("/ws/transcribe")
async def managed_transcription(websocket: WebSocket) -> None:
    """A managed live transcription session: `auth` first, then binary PCM16."""
    gateway = websocket.app.state.gateway
    await websocket.accept()
    auth = await first_message(websocket, gateway.settings.ws_auth_timeout_s)
    if auth is None:
        return

    request = LiveRequest(MANAGED_ROUTE, auth.config.model, credential=auth.token)
    await serve_live(websocket, gateway, request, ManagedEndpoint(auth.config))
