"""The live socket of a Realtime conversation: the shared shell (hearing, metering, cut-off, one ending) plus
the voice agent's session, its turn loop and its synthesis.

Before it accepts, it finds the session (`session_id`, the caller's own) or makes one from the voice agent;
another key's or an unknown session is refused like a 404, in the protocol's shape.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from starlette.websockets import WebSocket

from earshot.api.admission import Admission
from earshot.api.context import Gateway
from earshot.api.live.actions import ChannelAction
from earshot.api.live.admission import refuse
from earshot.api.live.client_socket import SOCKET_GONE_ERRORS
from earshot.api.live.models import ModelChooser
from earshot.api.live.shell import LiveSocket
from earshot.api.realtime import server_events as events
from earshot.api.realtime.conversation import (
    CancelResponse,
    ConversationProtocol,
    DecideApproval,
    Reconfigure,
    Remember,
    Respond,
    Truncate,
)
from earshot.audio.encode import SpeechFormat
from earshot.routing.catalog import ChatModelNotFound, ModelNotFound, VoiceAgentSpec
from earshot.store.records import NewItem, Outcome, SessionRecord
from earshot.voice.conversation import (
    Conversation,
    approval_response,
    denial_output,
    function_call_output,
    new_id,
)
from earshot.voice.tts import SpeechRequest
from earshot.voice.turn import Turn
from earshot.voice.voice_events import VoiceEvent
from earshot.voice.voice_turns import Continuation, VoiceTurns

log = logging.getLogger(__name__)
# "default" in a voice agent means the synthesis model's usual voice.
DEFAULT_VOICE = "alloy"


class ConversationSocket(LiveSocket):
    """One voice conversation from accept to its usage record."""

    protocol: ConversationProtocol

    def __init__(
        self,
        websocket: WebSocket,
        gateway: Gateway,
        admission: Admission,
        protocol: ConversationProtocol,
        chooser: ModelChooser,
        agent_id: str,
        agent: VoiceAgentSpec,
        session_id: str | None,
    ) -> None:
        super().__init__(websocket, gateway, admission, protocol, chooser)
        self.agent_id = agent_id
        self.agent = agent
        self.session_id = session_id
        self.record: SessionRecord | None = None
        self.turns: VoiceTurns | None = None

    async def run(self, subprotocol: str | None) -> Outcome:
        refusal = await self._open_session()
        if refusal is not None:
            code, message = refusal
            await refuse(self.websocket, subprotocol, ConversationProtocol.refusal("ga", code, message))
            return "rejected"
        assert self.turns is not None
        try:
            return await super().run(subprotocol)
        finally:
            await self.turns.close()
            self.admission.count_tokens(self.turns.prompt_tokens, self.turns.completion_tokens)
            self.admission.ticket.characters += self.turns.characters

    async def _open_session(self) -> tuple[str, str] | None:
        """Find or make the session; the refusal (code, message) when there is none to talk in."""
        gateway, key = self.gateway, self.admission.key
        owner = key.id if key is not None else None
        if self.session_id is not None:
            record = await gateway.sessions.get(self.session_id, owner)
            if record is None:
                return "session_not_found", f"no session {self.session_id!r}"
            if record.state != "active":
                return "session_ended", f"session {record.id!r} has ended"
        else:
            now = datetime.now(UTC)
            record = SessionRecord(
                id=new_id("sess"),
                key_id=owner,
                end_user=None,
                chat_model=self.agent.chat_model or gateway.router.catalog.default_chat_model,
                instructions=self.agent.instructions,
                tools=(),
                voice=self.agent.voice,
                state="active",
                created_at=now,
                updated_at=now,
                ended_at=None,
            )
            await gateway.sessions.create(record)
        try:
            chat = gateway.chat.route(record.chat_model or self.agent.chat_model)
            speech = gateway.router.synthesis.route(self.agent.speech_synthesis_model)
        except (ChatModelNotFound, ModelNotFound) as e:
            return "model_not_found", f"the voice agent {self.agent_id!r} is missing a model: {e}"
        self.record = record
        voice = record.voice or self.agent.voice
        self.protocol.conversation = dataclasses.replace(
            self.protocol.conversation,
            session_id=record.id,
            instructions=record.instructions,
            tools=record.tools,
            voice=DEFAULT_VOICE if voice == "default" else voice,
        )

        def new_brain() -> Turn:
            assert self.record is not None
            return Turn(gateway.sessions, self.record, chat)

        async def speak(text: str) -> AsyncIterator[bytes]:
            settings = self.protocol.conversation
            request = SpeechRequest(text, settings.voice, SpeechFormat.PCM, settings.speed)
            stream = await speech.chain.open(request)
            try:
                async for pcm16 in stream:
                    yield pcm16
            finally:
                await stream.aclose()

        self.turns = VoiceTurns(
            record.id,
            gateway.turn_locks,
            new_brain,
            speak,
            self._store,
            self._emit,
            rewrite=self._rewrite,
            decided=self._decided,
            filler=self.agent.filler,
            filler_after_ms=self.agent.filler_after_ms,
        )
        self.turns.text_only = self.protocol.conversation.text_only
        return None

    async def _store(self, items: list[NewItem]) -> None:
        assert self.record is not None
        await self.gateway.sessions.append(self.record.id, items, datetime.now(UTC))

    async def _rewrite(self, item: NewItem) -> None:
        assert self.record is not None
        await self.gateway.sessions.rewrite(self.record.id, item, datetime.now(UTC))

    async def _emit(self, event: VoiceEvent) -> None:
        try:
            await self._execute(self.protocol.on_voice(event))
        except SOCKET_GONE_ERRORS as e:
            log.debug("could not deliver a voice event: %s", e)
            self.end("client_closed", "the connection was lost")
            # Nobody is left to hear the response: it stops here (the conversation's close tidies up).
            raise asyncio.CancelledError from e

    async def _carry_out(self, action: ChannelAction) -> None:
        turns, record = self.turns, self.record
        assert turns is not None and record is not None
        if isinstance(action, Respond):
            turns.respond(action.opening)
        elif isinstance(action, Remember):
            await self._store(action.items)
            if action.answered_call:
                turns.call_answered()
        elif isinstance(action, CancelResponse):
            await turns.cancel()
        elif isinstance(action, Truncate):
            await turns.truncate(action.item_id, action.audio_end_ms)
        elif isinstance(action, Reconfigure):
            self.record = dataclasses.replace(
                record, instructions=action.settings.instructions, tools=action.settings.tools
            )
            turns.text_only = action.settings.text_only
        elif isinstance(action, DecideApproval):
            await self._decide(action)

    async def _decide(self, action: DecideApproval) -> None:
        """Record the socket's decision; the turn waiting on it continues (the first decision wins)."""
        assert self.record is not None
        now = datetime.now(UTC)
        decision = await self.gateway.sessions.decide(
            self.record.id, action.approval_id, action.approve, action.reason, now
        )
        if decision is None or not decision.won:
            code = "approval_not_found" if decision is None else "already_decided"
            message = f"approval request {action.approval_id!r}: {code.replace('_', ' ')}"
            await self._send(events.error("invalid_request_error", code, message, None))

    async def _decided(self, approval_ids: tuple[str, ...]) -> Continuation | None:
        """What continues a turn once any of its approval requests is decided (here or over HTTP)."""
        assert self.record is not None
        conversation = Conversation(await self.gateway.sessions.items(self.record.id))
        decided = [
            request
            for request in conversation.approvals.values()
            if request.id in approval_ids and request.approve is not None
        ]
        if not decided:
            return None
        opening: list[NewItem] = []
        announce: list[dict[str, Any]] = []
        for request in decided:
            call_id = str(request.call_id)
            opening.append(approval_response(request.id, call_id, bool(request.approve), request.reason))
            if not request.approve:
                opening.append(function_call_output(call_id, denial_output(request.reason)))
            elif (call := conversation.calls.get(call_id)) is not None:
                announce.append(call.data)
        return opening, announce
