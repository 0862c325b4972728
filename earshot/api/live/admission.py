"""Admitting a live connection: its key, its model and a live place on that model, or a refusal in the
protocol's own shape; then serving it and writing its one usage record, however it ends.

Every live endpoint calls `serve_live` with a `LiveRequest` (where it lives, what the client asked for) and
its `LiveEndpoint` (how its protocol is built and how it refuses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from earshot.accounts.errors import AccessDenied
from earshot.api.admission import Admission
from earshot.api.context import Gateway
from earshot.api.failures import of_denial
from earshot.api.live.actions import Action, CloseSocket, LiveProtocol, ModelRefused, RefuseHandshake, Send
from earshot.api.live.client_socket import SOCKET_GONE_ERRORS
from earshot.api.live.models import ModelChooser as ModelChooser
from earshot.api.live.shell import LiveSocket
from earshot.routing.capacity import live_busy_message
from earshot.store.records import Outcome
from earshot.streaming.live_config import LiveConfig

log = logging.getLogger(__name__)


class LiveRunner(Protocol):
    """Serves one admitted live connection until it ends."""

    async def run(self, subprotocol: str | None) -> Outcome:
        """Serve the connection; returns the usage outcome."""
        ...


@dataclass(frozen=True, slots=True)
class LiveRoute:
    """Where a live endpoint lives, for limits, metering and logs."""

    path: str
    bucket: str
    capability: str = "realtime"


@dataclass(frozen=True, slots=True)
class LiveRequest:
    """One live connection's ask: its route, model and subprotocol, and the key when it came in a message."""

    route: LiveRoute
    requested_model: str | None
    subprotocol: str | None = None
    # The key the client sent in its first message; None: the handshake's (header, query or subprotocol).
    credential: str | None = None
    # The catalog name the requested model is used for (a voice agent): the key must list that name.
    granted_by: str | None = None


class LiveEndpoint(Protocol):
    """What a live protocol gives `serve_live`: its protocol object once admitted, its refusals' shape."""

    def new_protocol(self, chooser: ModelChooser, model_id: str, defaults: LiveConfig) -> LiveProtocol:
        """The protocol object for an admitted session on `model_id`."""
        ...

    def refusal(self, code: str, message: str) -> list[Action]:
        """The actions that refuse the connection for one of earshot's refusal codes."""
        ...

    def relay(self, chooser: ModelChooser, admission: Admission, defaults: LiveConfig) -> LiveRunner | None:
        """A runner that takes the whole session over (a provider's own live socket), or None."""
        ...


@runtime_checkable
class BuildsSocket(Protocol):
    """A live endpoint whose protocol needs a socket of its own (a `LiveSocket` subclass)."""

    def new_socket(
        self, gateway: Gateway, admission: Admission, protocol: LiveProtocol, chooser: ModelChooser
    ) -> LiveRunner:
        """The socket that serves `protocol`."""
        ...


async def refuse(websocket: WebSocket, subprotocol: str | None, actions: list[Action]) -> None:
    """Refuse with an HTTP response where the protocol asks and the server can; else accept, say why, close.

    (Browsers can't read a refused handshake's status, so most protocols explain in a message.)
    """
    denial = next((action for action in actions if isinstance(action, RefuseHandshake)), None)
    can_deny = "websocket.http.response" in (websocket.scope.get("extensions") or {})
    if denial is not None and can_deny and websocket.application_state == WebSocketState.CONNECTING:
        response = Response(
            denial.body, status_code=denial.status, media_type=denial.media_type, headers=dict(denial.headers)
        )
        await websocket.send_denial_response(response)
        return
    # The client may be gone already; nothing is left to tell it then.
    with contextlib.suppress(*SOCKET_GONE_ERRORS):
        if websocket.application_state == WebSocketState.CONNECTING:
            await websocket.accept(subprotocol=subprotocol)
        for action in actions:
            if isinstance(action, Send) and isinstance(action.message, str):
                await websocket.send_text(action.message)
        code = next((action.code for action in actions if isinstance(action, CloseSocket)), 1008)
        await websocket.close(code)


async def serve_live(
    websocket: WebSocket, gateway: Gateway, request: LiveRequest, endpoint: LiveEndpoint
) -> None:
    """Admit a live connection, serve it, and write its usage record once however it ends."""
    live_route, subprotocol, credential = request.route, request.subprotocol, request.credential
    refusal = endpoint.refusal
    try:
        if credential is None:
            admission = await gateway.admit(websocket, bucket=live_route.bucket, route=live_route.path)
        else:
            admission = await _admit_with(gateway, websocket, live_route, credential)
    except AccessDenied as denial:
        await refuse(websocket, subprotocol, refusal(_denial_code(denial), str(denial)))
        return
    outcome: Outcome = "error"
    socket: LiveRunner | None = None
    place = object()  # what holds this session's live place on its model
    try:
        grants = {request.requested_model or "": request.granted_by} if request.granted_by else None
        chooser = ModelChooser(gateway, admission, live_route.capability, grants)
        try:
            model_id = await _placed(gateway, chooser, chooser(request.requested_model), place)
        except ModelRefused as e:
            outcome = "rejected"
            await refuse(websocket, subprotocol, refusal(e.code, e.message))
            return
        dials = gateway.accounts.dials.current
        live_config = LiveConfig(idle_timeout_s=dials.keepalive_s, max_duration_s=dials.max_session_s)
        socket = endpoint.relay(chooser, admission, live_config)
        if socket is None:
            protocol = endpoint.new_protocol(chooser, model_id, live_config)
            if isinstance(endpoint, BuildsSocket):
                socket = endpoint.new_socket(gateway, admission, protocol, chooser)
            else:
                socket = LiveSocket(websocket, gateway, admission, protocol, chooser)
        gateway.live_session_started()
        try:
            outcome = await socket.run(subprotocol)
        finally:
            gateway.live_session_ended()
    except WebSocketDisconnect:
        outcome = "client_closed"
    except asyncio.CancelledError:
        outcome = "shutdown"
        raise
    finally:
        gateway.router.release_live(place)
        record = await admission.finish(outcome)
        gateway.metrics.live_sessions.labels(live_route.path, record.outcome or outcome).inc()
        log.info(
            "live session route=%s key=%s model=%s audio_s=%.3f outcome=%s",
            live_route.path,
            record.key_id or "anonymous",
            record.model or "-",
            record.audio_ms / 1000,
            record.outcome,
        )


async def _placed(gateway: Gateway, chooser: ModelChooser, model_id: str, place: object) -> str:
    """The model that takes the session: the chosen one, or a fallback with room.

    ModelRefused when all are full, or when the server is shutting down.
    """
    if gateway.draining.is_set():
        raise ModelRefused("server_shutting_down", "the server is shutting down; connect again shortly")
    placed = await gateway.router.take_live(model_id, place)
    if placed is None:
        busy = live_busy_message(model_id)
        log.warning("live session refused: %s", busy)
        raise ModelRefused("server_busy", busy)
    return chooser(placed) if placed != model_id else model_id


async def _admit_with(
    gateway: Gateway, websocket: WebSocket, live_route: LiveRoute, credential: str
) -> Admission:
    peer = websocket.client.host if websocket.client else "unknown"
    admission = await gateway.accounts.admit(credential or None, peer, live_route.bucket, live_route.path)
    websocket.state.key_id = admission.key_id
    return admission


def _denial_code(denial: AccessDenied) -> str:
    return of_denial(denial).code
