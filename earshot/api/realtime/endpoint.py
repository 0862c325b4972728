"""OpenAI Realtime transcription sessions: WS /v1/realtime?intent=transcription, beta and GA dialects.

The endpoint admits the caller and serves `RealtimeProtocol` (protocol.py) in the shared live socket shell, or
hands the session to the relay when a provider's own Realtime socket serves the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, WebSocket

from earshot.api.admission import Admission
from earshot.api.context import Gateway
from earshot.api.live.actions import Action, LiveProtocol
from earshot.api.live.admission import LiveRequest, LiveRoute, LiveRunner, ModelChooser, refuse, serve_live
from earshot.api.realtime import server_events as events
from earshot.api.realtime.conversation import ConversationProtocol
from earshot.api.realtime.conversation_events import ConversationSettings
from earshot.api.realtime.conversation_socket import ConversationSocket
from earshot.api.realtime.protocol import RealtimeProtocol
from earshot.api.realtime.relay_socket import relay_for
from earshot.api.realtime.session import Dialect, RealtimeSettings
from earshot.routing.catalog import VoiceAgentSpec
from earshot.streaming.live_config import LiveConfig

router = APIRouter()


def dialect_of(websocket: WebSocket) -> Dialect:
    """Beta when the client asks for realtime=v1 (header or subprotocol), GA otherwise."""
    beta_header = "realtime=v1" in websocket.headers.get("openai-beta", "")
    beta_subprotocol = "openai-beta.realtime-v1" in websocket.scope.get("subprotocols", [])
    return "beta" if beta_header or beta_subprotocol else "ga"


REALTIME_ROUTE = LiveRoute(path="/v1/realtime", bucket="realtime")
CONVERSATION_ROUTE = LiveRoute(path="/v1/realtime.conversation", bucket="realtime")


@dataclass(frozen=True, slots=True)
class RealtimeEndpoint:
    """How `serve_live` builds, refuses and relays one Realtime connection in its dialect."""

    websocket: WebSocket
    dialect: Dialect

    def new_protocol(self, chooser: ModelChooser, model_id: str, defaults: LiveConfig) -> RealtimeProtocol:
        settings = RealtimeSettings(id=events.new_session_id(), model=model_id)
        return RealtimeProtocol(settings, self.dialect, chooser, defaults)

    def refusal(self, code: str, message: str) -> list[Action]:
        return RealtimeProtocol.refusal(self.dialect, code, message)

    def relay(self, chooser: ModelChooser, admission: Admission, defaults: LiveConfig) -> LiveRunner | None:
        gateway = self.websocket.app.state.gateway
        return relay_for(self.websocket, gateway, admission, chooser, self.dialect, defaults)


@dataclass(frozen=True, slots=True)
class ConversationEndpoint:
    """How `serve_live` builds and refuses one Realtime conversation with a voice agent (GA dialect)."""

    websocket: WebSocket
    agent_id: str
    agent: VoiceAgentSpec
    session_id: str | None

    def new_protocol(
        self, chooser: ModelChooser, model_id: str, defaults: LiveConfig
    ) -> ConversationProtocol:
        hearing = RealtimeSettings(id=events.new_session_id(), model=model_id)
        settings = ConversationSettings(hearing=hearing, agent=self.agent_id, voice=self.agent.voice)
        return ConversationProtocol(settings, chooser, defaults)

    def new_socket(
        self, gateway: Gateway, admission: Admission, protocol: LiveProtocol, chooser: ModelChooser
    ) -> LiveRunner:
        assert isinstance(protocol, ConversationProtocol)
        return ConversationSocket(
            self.websocket, gateway, admission, protocol, chooser, self.agent_id, self.agent, self.session_id
        )

    def refusal(self, code: str, message: str) -> list[Action]:
        return ConversationProtocol.refusal("ga", code, message)

    def relay(self, chooser: ModelChooser, admission: Admission, defaults: LiveConfig) -> LiveRunner | None:
        return None


@router.websocket("/v1/realtime")
async def realtime_transcription(websocket: WebSocket) -> None:
    """A Realtime transcription session (`?intent=transcription`), beta or GA dialect; or, when `model` is
    a voice agent, a conversation with it (GA, `&session_id=` to talk in an existing session)."""
    offered = websocket.scope.get("subprotocols", [])
    subprotocol = "realtime" if "realtime" in offered else None
    gateway = websocket.app.state.gateway
    agent_id = websocket.query_params.get("model")
    agent = gateway.router.catalog.resolve_voice_agent(agent_id)
    if agent is not None and agent_id is not None:
        conversation = ConversationEndpoint(
            websocket, agent_id, agent, websocket.query_params.get("session_id")
        )
        request = LiveRequest(CONVERSATION_ROUTE, agent.speech_model, subprotocol, granted_by=agent_id)
        await serve_live(websocket, gateway, request, conversation)
        return
    endpoint = RealtimeEndpoint(websocket, dialect_of(websocket))
    intent = websocket.query_params.get("intent")
    if intent not in (None, "transcription"):
        message = "earshot serves transcription sessions: connect with ?intent=transcription"
        await refuse(websocket, subprotocol, endpoint.refusal("unsupported_intent", message))
        return
    request = LiveRequest(REALTIME_ROUTE, websocket.query_params.get("model"), subprotocol)
    await serve_live(websocket, websocket.app.state.gateway, request, endpoint)
