"""A session's conversation without I/O: its items as the chat model sees them, what a turn waits for, and
the repair of calls left unanswered.

Items are stored in the Realtime API's conversation-item shapes: `message` (user `input_text`, assistant
`output_text`), `function_call`, `function_call_output`, `mcp_approval_request` and `mcp_approval_response`.
A call to a tool with `requires_approval` is stored as a `function_call` followed by its approval request; the
model sees the call, and (once answered) its output, never the approval items themselves.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from earshot.store.records import NewItem, SessionItemRecord

APPROVAL_SERVER_LABEL = "earshot"
ABANDONED_OUTPUT = json.dumps({"error": "no result: the call was abandoned before its output was given"})


def new_id(prefix: str) -> str:
    """A fresh id for an item, response or approval request."""
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def user_message(text: str) -> NewItem:
    item = {
        "id": new_id("item"),
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }
    return NewItem("message", item)


def assistant_message(item_id: str, text: str) -> NewItem:
    content = [{"type": "output_text", "text": text}]
    return NewItem("message", {"id": item_id, "type": "message", "role": "assistant", "content": content})


def function_call(call_id: str, name: str, arguments: str) -> NewItem:
    item = {
        "id": new_id("item"),
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }
    return NewItem("function_call", item, call_id=call_id)


def function_call_output(call_id: str, output: str) -> NewItem:
    item = {"id": new_id("item"), "type": "function_call_output", "call_id": call_id, "output": output}
    return NewItem("function_call_output", item, call_id=call_id)


def approval_request(call_id: str, name: str, arguments: str) -> NewItem:
    item = {
        "id": new_id("mcpr"),
        "type": "mcp_approval_request",
        "server_label": APPROVAL_SERVER_LABEL,
        "name": name,
        "arguments": arguments,
    }
    return NewItem("mcp_approval_request", item, call_id=call_id)


def approval_response(approval_id: str, call_id: str | None, approve: bool, reason: str | None) -> NewItem:
    item = {
        "id": new_id("item"),
        "type": "mcp_approval_response",
        "approval_request_id": approval_id,
        "approve": approve,
        "reason": reason,
    }
    return NewItem("mcp_approval_response", item, call_id=call_id)


def denial_output(reason: str | None) -> str:
    """What the model is told when a person denied the call."""
    return json.dumps({"error": "the user denied this call", "reason": reason or None})


def needs_approval(tools: Sequence[dict[str, Any]], name: str) -> bool:
    """Whether the session's tool `name` may only run once a person approves it."""
    return any(_tool_name(tool) == name and tool.get("requires_approval") for tool in tools)


def chat_tools(tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The session's tools in the chat completions shape (`{type, function: {...}}`), without earshot's keys.

    Sessions accept both OpenAI shapes: Chat Completions' nested `function` and Realtime's flat one.
    """
    shaped = []
    for tool in tools:
        if isinstance(tool.get("function"), dict):
            function = dict(tool["function"])
        else:
            function = {k: v for k, v in tool.items() if k in ("name", "description", "parameters", "strict")}
        shaped.append({"type": "function", "function": function})
    return shaped


def _tool_name(tool: dict[str, Any]) -> str | None:
    function = tool.get("function")
    name = function.get("name") if isinstance(function, dict) else tool.get("name")
    return name if isinstance(name, str) else None


@dataclass(frozen=True, slots=True)
class Waiting:
    """What a paused turn waits for: client outputs of these calls, and decisions on these approvals."""

    outputs: tuple[str, ...]
    approvals: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.outputs or self.approvals)


class Conversation:
    """A read of a session's items, in order."""

    def __init__(self, items: Sequence[SessionItemRecord]) -> None:
        self.items = list(items)
        self.calls = {item.call_id: item for item in self.items if item.type == "function_call"}
        self.answered = {item.call_id for item in self.items if item.type == "function_call_output"}
        self.approvals = {item.call_id: item for item in self.items if item.type == "mcp_approval_request"}

    def waiting(self) -> Waiting:
        """The calls still owed an output by the client, and the approvals still undecided."""
        outputs, approvals = [], []
        for call_id in self.calls:
            if call_id in self.answered:
                continue
            approval = self.approvals.get(call_id)
            if approval is not None and approval.approve is None:
                approvals.append(approval.id)
            elif approval is None or approval.approve:
                outputs.append(str(call_id))
        return Waiting(tuple(outputs), tuple(approvals))

    def needs_model(self) -> bool:
        """Whether the model has something to answer: the last thing said is the user's or a tool's."""
        for item in reversed(self.items):
            if item.type == "function_call_output":
                return True
            if item.type == "message":
                return item.data.get("role") == "user"
            if item.type == "function_call":
                return False
        return False

    def repairs(self) -> list[NewItem]:
        """Outputs for every call no one answered (abandoned, or denied without its output written), so
        that the model never sees an unanswered call."""
        repaired = []
        for call_id in self.calls:
            if call_id in self.answered:
                continue
            approval = self.approvals.get(call_id)
            if approval is not None and approval.approve is False:
                repaired.append(function_call_output(str(call_id), denial_output(approval.reason)))
            else:
                repaired.append(function_call_output(str(call_id), ABANDONED_OUTPUT))
        return repaired

    def undecided_approvals(self) -> list[SessionItemRecord]:
        """Approval requests still waiting for a person."""
        return [item for item in self.approvals.values() if item.approve is None]

    def messages(self, instructions: str | None) -> list[dict[str, Any]]:
        """The chat completions messages for the conversation so far."""
        messages: list[dict[str, Any]] = []
        if instructions:
            messages.append({"role": "system", "content": instructions})
        for item in self.items:
            data = item.data
            if item.type == "message":
                text = "".join(part.get("text", "") for part in data.get("content", ()))
                messages.append({"role": data.get("role", "user"), "content": text})
            elif item.type == "function_call":
                call = {
                    "id": data["call_id"],
                    "type": "function",
                    "function": {"name": data["name"], "arguments": data.get("arguments", "{}")},
                }
                last = messages[-1] if messages else None
                if last is not None and last["role"] == "assistant":
                    last.setdefault("tool_calls", []).append(call)
                else:
                    messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            elif item.type == "function_call_output":
                messages.append(
                    {"role": "tool", "tool_call_id": data["call_id"], "content": data.get("output", "")}
                )
        return messages
