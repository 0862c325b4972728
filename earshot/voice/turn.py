"""One turn of a session's conversation: items in, the chat model called until it has said its piece or the
turn must wait (for a client's tool output or a person's approval), events out as it goes.

The turn does the store and chat I/O and yields `TurnEvent`s; a channel (the SSE route today, the voice
socket next) renders them in its protocol. Closing the event iterator (a client that left) stops the turn;
what was stored by then stays.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from earshot.store.records import NewItem, SessionRecord
from earshot.store.sessions import SessionRepository
from earshot.voice.chat import ChatRoute
from earshot.voice.chat_wire import TextDelta, ToolCall, Usage
from earshot.voice.conversation import (
    Conversation,
    Waiting,
    approval_request,
    assistant_message,
    chat_tools,
    function_call,
    needs_approval,
    new_id,
)

# A model that keeps calling tools the server answers itself (denials) is stopped after this many calls.
MAX_MODEL_CALLS = 8


@dataclass(frozen=True, slots=True)
class AssistantText:
    """A piece of the assistant's text for the message item `item_id`."""

    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class AssistantTextDone:
    """The assistant's message item is complete."""

    item: dict[str, Any]
    text: str


@dataclass(frozen=True, slots=True)
class CallReady:
    """The client should run this function call and post its output."""

    item: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ApprovalRequested:
    """A person should approve or deny this call (an `mcp_approval_request` item)."""

    item: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TurnEnded:
    """The turn is over: what it output, and what (if anything) it now waits for."""

    output: list[dict[str, Any]]
    waiting: Waiting


TurnEvent = AssistantText | AssistantTextDone | CallReady | ApprovalRequested | TurnEnded


class NoChatModel(Exception):
    """The session has no chat model to answer with."""


@dataclass(slots=True)
class Turn:
    """A turn of one session; `prompt_tokens` and `completion_tokens` add up the model calls it made."""

    sessions: SessionRepository
    session: SessionRecord
    chat: ChatRoute | None
    response_id: str = field(default_factory=lambda: new_id("resp"))
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _output: list[dict[str, Any]] = field(default_factory=list)

    async def run(self, opening: list[NewItem], announce: list[dict[str, Any]]) -> AsyncIterator[TurnEvent]:
        """Store `opening`, announce `announce` (calls now for the client to run), then call the model while
        the conversation needs it."""
        if opening:
            await self.sessions.append(self.session.id, opening, datetime.now(UTC))
        for item in announce:
            self._output.append(item)
            yield CallReady(item)
        for _ in range(MAX_MODEL_CALLS):
            conversation = Conversation(await self.sessions.items(self.session.id))
            if conversation.waiting() or not conversation.needs_model():
                break
            async for event in self._call_model(conversation):
                yield event
        conversation = Conversation(await self.sessions.items(self.session.id))
        yield TurnEnded(self._output, conversation.waiting())

    async def _call_model(self, conversation: Conversation) -> AsyncIterator[TurnEvent]:
        if self.chat is None:
            raise NoChatModel(
                "this session has no chat model: set chat_model or configure default_chat_model"
            )
        item_id = new_id("item")
        texts: list[str] = []
        calls: list[ToolCall] = []
        messages = conversation.messages(self.session.instructions)
        async for event in self.chat.client.stream(messages, chat_tools(self.session.tools)):
            if isinstance(event, TextDelta):
                texts.append(event.text)
                yield AssistantText(item_id, event.text)
            elif isinstance(event, ToolCall):
                calls.append(event)
            elif isinstance(event, Usage):
                self.prompt_tokens += event.prompt_tokens
                self.completion_tokens += event.completion_tokens
        new_items: list[NewItem] = []
        announced: list[TurnEvent] = []
        text = "".join(texts)
        if text:
            message = assistant_message(item_id, text)
            new_items.append(message)
            announced.append(AssistantTextDone(message.data, text))
        for call in calls:
            call_item = function_call(call.call_id, call.name, call.arguments)
            new_items.append(call_item)
            if needs_approval(self.session.tools, call.name):
                request = approval_request(call.call_id, call.name, call.arguments)
                new_items.append(request)
                announced.append(ApprovalRequested(request.data))
            else:
                announced.append(CallReady(call_item.data))
        await self.sessions.append(self.session.id, new_items, datetime.now(UTC))
        for done in announced:
            if isinstance(done, AssistantTextDone | CallReady | ApprovalRequested):
                self._output.append(done.item)
            yield done
