"""A fake OpenAI-compatible chat model: `POST /v1/chat/completions` streamed as OpenAI streams it.

Replies are scripted per test (`fake.script(Reply(...), ...)`); with nothing scripted it answers DEFAULT_TEXT.
A reply streams its text in pieces (`delta.content`), then its tool calls split across chunks as OpenAI
does (the first chunk of a call carries `index`, `id`, `type` and `function.name` with empty arguments; the
next ones carry pieces of `function.arguments`), a last chunk with `finish_reason` (`tool_calls` or `stop`), a
chunk with `usage` and empty `choices` when `stream_options.include_usage` is asked, and `data: [DONE]`.

Scripted failures: `Reply(status=500)` answers an error body (with SECRET_MARKER, which earshot must never
pass on), `Reply(drop_after_chunks=2)` drops the connection mid-stream. `Reply(hold=event)` waits for a
`threading.Event` before its last chunk, so a test can keep a turn running.

Like OpenAI, it refuses (400) a conversation in which an assistant's tool call has no tool message answering
it; every request body is kept in `requests`, and `unanswered_calls` lists such calls in one.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.openai_realtime import SECRET_MARKER

CHAT_KEY = "sk-fake-chat-key-3f81aa"
AZURE_CHAT_KEY = "azure-fake-chat-key-7c02de"
DEFAULT_TEXT = "Hello from the fake chat model."


@dataclass(frozen=True)
class ScriptedCall:
    """A tool call the model makes: its arguments are sent in `pieces` chunks."""

    name: str
    arguments: dict[str, Any]
    call_id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:16]}")
    pieces: int = 3


@dataclass(frozen=True)
class Reply:
    """One scripted answer to one request."""

    text: str = ""
    calls: tuple[ScriptedCall, ...] = ()
    prompt_tokens: int = 21
    completion_tokens: int = 9
    # Failures: an HTTP error instead of a stream, or the connection dropped after this many chunks.
    status: int | None = None
    drop_after_chunks: int | None = None
    # Held before the finishing chunk until the event is set (the turn stays running meanwhile).
    hold: threading.Event | None = None
    chunk_delay_s: float = 0.0


def unanswered_calls(messages: list[dict[str, Any]]) -> list[str]:
    """The ids of assistant tool calls that no later tool message answers."""
    called = [
        call["id"]
        for message in messages
        if message.get("role") == "assistant"
        for call in message.get("tool_calls") or ()
    ]
    answered = {message.get("tool_call_id") for message in messages if message.get("role") == "tool"}
    return [call_id for call_id in called if call_id not in answered]


class FakeChat:
    """The ASGI app, its script and what it was sent."""

    def __init__(self) -> None:
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._openai, methods=["POST"]),
                Route("/openai/deployments/{deployment}/chat/completions", self._azure, methods=["POST"]),
            ]
        )

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order."""
        with self._lock:
            self._script.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
        self.requests.clear()
        self.headers.clear()

    def _next(self) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else Reply(text=DEFAULT_TEXT)

    async def _openai(self, request: Request) -> Response:
        authorized = request.headers.get("authorization") == f"Bearer {CHAT_KEY}"
        return await self._answer(request, authorized)

    async def _azure(self, request: Request) -> Response:
        authorized = (
            request.headers.get("api-key") == AZURE_CHAT_KEY and "api-version" in request.query_params
        )
        return await self._answer(request, authorized)

    async def _answer(self, request: Request, authorized: bool) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if not authorized:
            return _error(401, f"Incorrect API key provided ({SECRET_MARKER})", "invalid_api_key")
        dangling = unanswered_calls(body.get("messages", []))
        if dangling:
            message = (
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. The following tool_call_ids did not have response messages: {dangling[0]}"
            )
            return _error(400, message, None)
        reply = self._next()
        if reply.status is not None:
            return _error(reply.status, f"The server had an error ({SECRET_MARKER})", None)
        if not body.get("stream"):
            return _error(400, "this fake only streams", None)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            _stream(reply, body.get("model", "fake"), include_usage), media_type="text/event-stream"
        )


def _error(status: int, message: str, code: str | None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status
    )


def reply_chunks(reply: Reply, model: str, include_usage: bool) -> list[dict[str, Any]]:
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:20]}"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    chunks = [chunk({"role": "assistant", "content": ""})]
    words = reply.text.split(" ") if reply.text else []
    for position, word in enumerate(words):
        chunks.append(chunk({"content": word if position == 0 else " " + word}))
    for index, call in enumerate(reply.calls):
        first = {"index": index, "id": call.call_id, "type": "function", "function": {"name": call.name}}
        first["function"]["arguments"] = ""
        chunks.append(chunk({"tool_calls": [first]}))
        arguments = json.dumps(call.arguments)
        size = max(1, -(-len(arguments) // call.pieces))
        for start in range(0, len(arguments), size):
            piece = {"index": index, "function": {"arguments": arguments[start : start + size]}}
            chunks.append(chunk({"tool_calls": [piece]}))
    chunks.append(chunk({}, "tool_calls" if reply.calls else "stop"))
    if include_usage:
        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        }
        chunks.append({**chunk({}), "choices": [], "usage": usage})
    return chunks


async def _stream(reply: Reply, model: str, include_usage: bool) -> AsyncIterator[bytes]:
    chunks = reply_chunks(reply, model, include_usage)
    for sent, body in enumerate(chunks):
        if reply.drop_after_chunks is not None and sent == reply.drop_after_chunks:
            # An exception in the body generator makes uvicorn cut the connection mid-response.
            raise ConnectionAbortedError("scripted drop")
        if reply.hold is not None and sent == len(chunks) - (2 if include_usage else 1):
            await asyncio.to_thread(reply.hold.wait, 30)
        if reply.chunk_delay_s:
            await asyncio.sleep(reply.chunk_delay_s)
        yield f"data: {json.dumps(body)}\n\n".encode()
    yield b"data: [DONE]\n\n"
