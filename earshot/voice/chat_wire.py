"""OpenAI's streamed chat completions, without I/O: the request body, and the SSE lines decoded into events.

A stream sends text in `delta.content` pieces and each tool call in pieces too: the first chunk of a call has
its `index`, `id` and `function.name`, later chunks (by the same `index`) add to `function.arguments`. The
decoder puts the calls together and hands them out whole when the choice finishes, then the usage (sent in a
last chunk with no choices when `stream_options.include_usage` is asked for).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TextDelta:
    """The next piece of the assistant's text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A whole function call the model asks for; `arguments` is the JSON text the model wrote."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens the call used, as the upstream counted them."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Finished:
    """The choice ended: `stop`, `tool_calls`, `length` or `content_filter`."""

    reason: str


ChatEvent = TextDelta | ToolCall | Usage | Finished


class ChatWireError(ValueError):
    """The upstream sent something that is not a chat completion stream."""


def request_body(
    model: str | None, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> dict[str, Any]:
    """The body of a streamed `POST /chat/completions` (no `model` for Azure, whose URL names it)."""
    body: dict[str, Any] = {
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if model is not None:
        body["model"] = model
    if tools:
        body["tools"] = tools
    return body


@dataclass(slots=True)
class _PartialCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ChatStreamDecoder:
    """Fed the stream's lines, returns the events they complete; `done` once `data: [DONE]` arrived."""

    def __init__(self) -> None:
        self.done = False
        self.finished = False
        self._calls: dict[int, _PartialCall] = {}

    def feed_line(self, line: str) -> list[ChatEvent]:
        """The events one SSE line completes (blank lines, comments and other fields complete none)."""
        if not line.startswith("data:"):
            return []
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError as e:
            raise ChatWireError(f"a stream chunk is not JSON: {e}") from e
        if not isinstance(chunk, dict):
            raise ChatWireError("a stream chunk is not an object")
        if "error" in chunk:
            raise ChatWireError("the upstream reported an error mid-stream")
        events: list[ChatEvent] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) == 0:
                events.extend(self._choice(choice))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            events.append(
                Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
            )
        return events

    def _choice(self, choice: dict[str, Any]) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if isinstance(content, str) and content:
            events.append(TextDelta(content))
        for piece in delta.get("tool_calls") or ():
            call = self._calls.setdefault(int(piece.get("index", 0)), _PartialCall())
            call.call_id = piece.get("id") or call.call_id
            function = piece.get("function") or {}
            call.name = function.get("name") or call.name
            if function.get("arguments"):
                call.arguments.append(function["arguments"])
        reason = choice.get("finish_reason")
        if reason:
            for index in sorted(self._calls):
                call = self._calls[index]
                if not call.call_id or not call.name:
                    raise ChatWireError("a tool call came without its id or name")
                events.append(ToolCall(call.call_id, call.name, "".join(call.arguments) or "{}"))
            self._calls.clear()
            self.finished = True
            events.append(Finished(str(reason)))
        return events
