"""Deepgram live transcription: WS /v1/listen.

The endpoint checks the query parameters (a bad one is refused at the handshake in Deepgram's error shape) and
serves `DeepgramLiveProtocol` (protocol.py) in the shared live socket shell.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from fastapi import APIRouter, WebSocket

from earshot.api.admission import Admission
from earshot.api.deepgram.params import DeepgramError, ListenParams, check_language, choose_model
from earshot.api.deepgram.protocol import DeepgramLiveProtocol
from earshot.api.deepgram.results import ModelInfo
from earshot.api.live.actions import Action
from earshot.api.live.admission import LiveRequest, LiveRoute, LiveRunner, ModelChooser, refuse, serve_live
from earshot.routing.catalog import ModelNotFound
from earshot.streaming.live_config import LiveConfig

router = APIRouter()


LISTEN_ROUTE = LiveRoute(path="/v1/listen", bucket="listen")


@dataclass(frozen=True, slots=True)
class DeepgramEndpoint:
    """How `serve_live` builds and refuses one Deepgram stream with its checked query parameters."""

    params: ListenParams
    request_id: str

    def new_protocol(
        self, chooser: ModelChooser, model_id: str, defaults: LiveConfig
    ) -> DeepgramLiveProtocol:
        arch = chooser.route.spec.engine if chooser.route is not None else "unknown"
        return DeepgramLiveProtocol(self.params, ModelInfo(model_id, arch), defaults, self.request_id)

    def refusal(self, code: str, message: str) -> list[Action]:
        return DeepgramLiveProtocol.refusal(DeepgramError.refused(code, message), self.request_id)

    def relay(self, chooser: ModelChooser, admission: Admission, defaults: LiveConfig) -> LiveRunner | None:
        return None


@router.websocket("/v1/listen")
async def listen_live(websocket: WebSocket) -> None:
    """A Deepgram live transcription stream."""
    offered = websocket.scope.get("subprotocols", [])
    subprotocol = "token" if "token" in offered else None
    gateway = websocket.app.state.gateway
    request_id = str(uuid.uuid4())
    query = websocket.query_params
    try:
        params = ListenParams.from_query(query, {name: query.getlist(name) for name in query})
        choice = choose_model(gateway.router.catalog, params.model)
        try:
            route = gateway.router.route(choice.model_id)
        except ModelNotFound as e:
            raise DeepgramError.bad_request(f"No such model: {choice.model_id}") from e
        check_language(params.language, route)
    except DeepgramError as e:
        await refuse(websocket, subprotocol, DeepgramLiveProtocol.refusal(e, request_id))
        return

    request = LiveRequest(LISTEN_ROUTE, choice.model_id, subprotocol)
    await serve_live(websocket, gateway, request, DeepgramEndpoint(params, request_id))
