"""The sessions wire, sans-I/O: request bodies, the session object, and a text turn's Realtime-shaped events.

A turn's SSE stream uses the Realtime API's response events, by name and shape: `response.created`, then for
each assistant message `response.output_item.added`, `response.output_text.delta`...,
`response.output_text.done` and `response.output_item.done`; for each call the client should run
`response.function_call_arguments.done {call_id, name, arguments}`; for each call that needs a person first
`response.output_item.done` with an `mcp_approval_request` item; and last `response.done {response: {id,
status, output, usage}}`. A failure sends `error`, then `response.done` with status `failed`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from earshot.store.records import SessionItemRecord, SessionRecord
from earshot.voice.conversation import Waiting
from earshot.voice.turn import (
    ApprovalRequested,
    AssistantText,
    AssistantTextDone,
    CallReady,
    TurnEnded,
    TurnEvent,
)

MAX_TOOLS = 128
MAX_TEXT_CHARS = 256 * 1024


class SessionCreate(BaseModel):
    """The body of POST /v1/sessions."""

    model_config = ConfigDict(extra="forbid")

    chat_model: str | None = Field(default=None, max_length=200)
    instructions: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    tools: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_TOOLS)
    voice: str | None = Field(default=None, max_length=64)
    end_user: str | None = Field(default=None, max_length=200)

    @field_validator("tools")
    @classmethod
    def _function_tools(cls, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        names: set[str] = set()
        for index, tool in enumerate(tools):
            if tool.get("type") != "function":
                raise ValueError(f"tools[{index}]: only function tools are supported (type: function)")
            nested = tool.get("function")
            function: dict[str, Any] = nested if isinstance(nested, dict) else tool
            name = function.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError(f"tools[{index}]: a function tool needs a name")
            if name in names:
                raise ValueError(f"tools[{index}]: the tool name {name!r} is used twice")
            names.add(name)
            if not isinstance(tool.get("requires_approval", False), bool):
                raise ValueError(f"tools[{index}]: requires_approval must be true or false")
        return tools


class UserMessage(BaseModel):
    """The body of POST /v1/sessions/{id}/messages."""

    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class ToolOutput(BaseModel):
    """The body of POST /v1/sessions/{id}/tool_outputs."""

    model_config = ConfigDict(extra="forbid")

    call_id: str = Field(min_length=1, max_length=128)
    output: str = Field(max_length=MAX_TEXT_CHARS)


class ApprovalDecision(BaseModel):
    """The body of POST /v1/sessions/{id}/approvals/{approval_id}."""

    model_config = ConfigDict(extra="forbid")

    approve: bool
    reason: str | None = Field(default=None, max_length=4096)


def session_json(record: SessionRecord, items: list[SessionItemRecord] | None = None) -> dict[str, Any]:
    """The session object; with its items when they are given."""
    body: dict[str, Any] = {
        "id": record.id,
        "object": "session",
        "state": record.state,
        "chat_model": record.chat_model,
        "instructions": record.instructions,
        "tools": list(record.tools),
        "voice": record.voice,
        "end_user": record.end_user,
        "created_at": int(record.created_at.timestamp()),
        "ended_at": int(record.ended_at.timestamp()) if record.ended_at else None,
    }
    if items is not None:
        body["items"] = [item_json(item) for item in items]
    return body


def item_json(item: SessionItemRecord) -> dict[str, Any]:
    """A stored item in its wire shape; an approval request says its decision once there is one."""
    body = dict(item.data)
    if item.type == "mcp_approval_request":
        body["decision"] = None if item.approve is None else {"approve": item.approve, "reason": item.reason}
    return body


def sse(event: dict[str, Any]) -> str:
    """One server-sent event named by its `type`."""
    return f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False, separators=(',', ':'))}\n\n"


class ResponseEvents:
    """The events of one response: fed the turn's events, returns the Realtime events to send."""

    def __init__(self, response_id: str) -> None:
        self.response_id = response_id
        self._output_index = 0
        self._open_message: str | None = None
        self.ended = False

    def _response(self, status: str, output: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "object": "realtime.response",
            "id": self.response_id,
            "status": status,
            "output": output,
            **extra,
        }

    def created(self) -> list[dict[str, Any]]:
        return [{"type": "response.created", "response": self._response("in_progress", [])}]

    def feed(
        self, event: TurnEvent, prompt_tokens: int = 0, completion_tokens: int = 0
    ) -> list[dict[str, Any]]:
        """The events one turn event makes (token counts are the turn's so far, for `response.done`)."""
        common = {"response_id": self.response_id}
        match event:
            case AssistantText(item_id, delta):
                sent = []
                if self._open_message != item_id:
                    self._open_message = item_id
                    item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress"}
                    sent.append(
                        {
                            "type": "response.output_item.added",
                            **common,
                            "output_index": self._output_index,
                            "item": item,
                        }
                    )
                delta_event = {
                    "type": "response.output_text.delta",
                    **common,
                    "item_id": item_id,
                    "output_index": self._output_index,
                    "content_index": 0,
                    "delta": delta,
                }
                return [*sent, delta_event]
            case AssistantTextDone(item, text):
                position = {"output_index": self._output_index}
                self._open_message = None
                self._output_index += 1
                return [
                    {
                        "type": "response.output_text.done",
                        **common,
                        "item_id": item["id"],
                        **position,
                        "content_index": 0,
                        "text": text,
                    },
                    {
                        "type": "response.output_item.done",
                        **common,
                        **position,
                        "item": {**item, "status": "completed"},
                    },
                ]
            case CallReady(item):
                index = self._output_index
                self._output_index += 1
                return [
                    {
                        "type": "response.function_call_arguments.done",
                        **common,
                        "item_id": item["id"],
                        "output_index": index,
                        "call_id": item["call_id"],
                        "name": item["name"],
                        "arguments": item["arguments"],
                    },
                    {"type": "response.output_item.done", **common, "output_index": index, "item": item},
                ]
            case ApprovalRequested(item):
                index = self._output_index
                self._output_index += 1
                return [{"type": "response.output_item.done", **common, "output_index": index, "item": item}]
            case TurnEnded(output, waiting):
                self.ended = True
                usage = _usage(prompt_tokens, completion_tokens)
                details = _waiting_details(waiting)
                return [
                    {
                        "type": "response.done",
                        "response": self._response("completed", output, usage=usage, **details),
                    }
                ]
        raise AssertionError(f"unknown turn event {event!r}")

    def failed(
        self, code: str, message: str, prompt_tokens: int = 0, completion_tokens: int = 0
    ) -> list[dict[str, Any]]:
        """An `error` event, then the response done as failed."""
        self.ended = True
        error_type = "server_error"
        failure = {"type": "failed", "error": {"type": error_type, "code": code}}
        return [
            {"type": "error", "error": {"type": error_type, "code": code, "message": message, "param": None}},
            {
                "type": "response.done",
                "response": self._response(
                    "failed", [], status_details=failure, usage=_usage(prompt_tokens, completion_tokens)
                ),
            },
        ]


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "total_tokens": prompt_tokens + completion_tokens,
        "input_tokens": prompt_tokens,
        "output_tokens": completion_tokens,
    }


def _waiting_details(waiting: Waiting) -> dict[str, Any]:
    if not waiting:
        return {}
    return {
        "waiting_for": {"tool_outputs": list(waiting.outputs), "approvals": list(waiting.approvals)},
    }
