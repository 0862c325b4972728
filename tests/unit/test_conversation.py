"""The conversation without I/O: what the model is sent, what a turn waits for, dangling calls repaired,
the chat stream decoded from OpenAI's chunks, and the Realtime events a turn is told in."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from earshot.api.sessions.protocol import ResponseEvents, SessionCreate
from earshot.store.records import NewItem, SessionItemRecord
from earshot.voice.chat_wire import ChatStreamDecoder, ChatWireError, Finished, TextDelta, ToolCall, Usage
from earshot.voice.conversation import (
    Conversation,
    Waiting,
    approval_request,
    assistant_message,
    chat_tools,
    function_call,
    function_call_output,
    user_message,
)
from earshot.voice.turn import AssistantText, AssistantTextDone, CallReady, TurnEnded
from tests.fakes.chat import Reply, ScriptedCall, reply_chunks


def stored(*items: NewItem, approve: dict[str, bool | None] | None = None) -> list[SessionItemRecord]:
    decisions = approve or {}
    return [
        SessionItemRecord(
            id=str(item.data["id"]),
            session_id="sess",
            position=position,
            type=item.type,
            call_id=item.call_id,
            data=item.data,
            approve=decisions.get(str(item.call_id)) if item.type == "mcp_approval_request" else None,
            reason="too much" if decisions.get(str(item.call_id)) is False else None,
            decided_at=None,
            created_at=datetime.now(UTC),
        )
        for position, item in enumerate(items, start=1)
    ]


def test_calls_of_one_answer_join_the_assistant_message_and_outputs_follow() -> None:
    items = stored(
        user_message("weather in two cities?"),
        assistant_message("item_a", "Let me look."),
        function_call("c1", "weather", '{"city": "Lisbon"}'),
        function_call("c2", "weather", '{"city": "Porto"}'),
        function_call_output("c1", "sunny"),
        function_call_output("c2", "rain"),
    )
    conversation = Conversation(items)
    messages = conversation.messages("Be brief.")
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[2]["content"] == "Let me look."
    assert [call["id"] for call in messages[2]["tool_calls"]] == ["c1", "c2"]
    assert [(m["role"], m.get("tool_call_id")) for m in messages[3:]] == [("tool", "c1"), ("tool", "c2")]
    assert not conversation.waiting() and conversation.needs_model()


def test_a_turn_waits_for_outputs_and_undecided_approvals_only() -> None:
    items = stored(
        user_message("go"),
        function_call("c1", "weather", "{}"),
        function_call("c2", "transfer", "{}"),
        approval_request("c2", "transfer", "{}"),
        function_call("c3", "transfer", "{}"),
        approval_request("c3", "transfer", "{}"),
        approve={"c2": None, "c3": True},
    )
    waiting = Conversation(items).waiting()
    assert waiting.outputs == ("c1", "c3")
    assert waiting.approvals == (items[3].id,)
    assert not Conversation(items).needs_model()


def test_repairs_answer_every_unanswered_call_so_the_model_never_sees_one() -> None:
    items = stored(
        user_message("go"),
        function_call("c1", "weather", "{}"),
        function_call("c2", "transfer", "{}"),
        approval_request("c2", "transfer", "{}"),
        approve={"c2": False},
    )
    repairs = Conversation(items).repairs()
    outputs = {item.call_id: json.loads(item.data["output"]) for item in repairs}
    assert "abandoned" in outputs["c1"]["error"]
    assert outputs["c2"] == {"error": "the user denied this call", "reason": "too much"}
    repaired = Conversation([*items, *stored(*repairs, user_message("later"))])
    tool_ids = {m["tool_call_id"] for m in repaired.messages(None) if m["role"] == "tool"}
    assert tool_ids == {"c1", "c2"}


def test_tools_in_either_openai_shape_reach_the_model_without_earshots_keys() -> None:
    flat = {"type": "function", "name": "a", "parameters": {}, "requires_approval": True}
    nested = {"type": "function", "function": {"name": "b", "parameters": {}}}
    assert chat_tools([flat, nested]) == [
        {"type": "function", "function": {"name": "a", "parameters": {}}},
        {"type": "function", "function": {"name": "b", "parameters": {}}},
    ]


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ([{"type": "web_search"}], "only function tools"),
        ([{"type": "function"}], "needs a name"),
        ([{"type": "function", "name": "a"}, {"type": "function", "name": "a"}], "used twice"),
    ],
)
def test_a_session_refuses_tools_it_cannot_offer(tools: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionCreate(tools=tools)


def decode(reply: Reply) -> list[Any]:
    decoder = ChatStreamDecoder()
    events = []
    for chunk in reply_chunks(reply, "m", include_usage=True):
        events.extend(decoder.feed_line(f"data: {json.dumps(chunk)}"))
    events.extend(decoder.feed_line("data: [DONE]"))
    assert decoder.done
    return events


def test_the_decoder_puts_split_tool_calls_together_and_reports_usage_last() -> None:
    first = ScriptedCall("weather", {"city": "Lisbon"}, call_id="call_1", pieces=6)
    second = ScriptedCall("time", {"zone": "UTC"}, call_id="call_2", pieces=2)
    events = decode(Reply(text="Checking both", calls=(first, second), prompt_tokens=12, completion_tokens=4))
    assert events == [
        TextDelta("Checking"),
        TextDelta(" both"),
        ToolCall("call_1", "weather", '{"city": "Lisbon"}'),
        ToolCall("call_2", "time", '{"zone": "UTC"}'),
        Finished("tool_calls"),
        Usage(12, 4),
    ]


def test_the_decoder_refuses_what_is_not_a_chat_stream() -> None:
    with pytest.raises(ChatWireError):
        ChatStreamDecoder().feed_line("data: {not json")
    with pytest.raises(ChatWireError):
        ChatStreamDecoder().feed_line('data: {"error": {"message": "overloaded"}}')
    assert ChatStreamDecoder().feed_line(": keepalive") == []


def test_a_turn_is_told_in_realtime_response_events() -> None:
    writer = ResponseEvents("resp_1")
    message = assistant_message("item_m", "Hi there").data
    call = function_call("c1", "weather", "{}").data
    events = [
        *writer.created(),
        *writer.feed(AssistantText("item_m", "Hi")),
        *writer.feed(AssistantText("item_m", " there")),
        *writer.feed(AssistantTextDone(message, "Hi there")),
        *writer.feed(CallReady(call)),
        *writer.feed(TurnEnded([message, call], Waiting(("c1",), ())), 30, 5),
    ]
    assert [event["type"] for event in events] == [
        "response.created",
        "response.output_item.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_item.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.done",
    ]
    assert events[6]["output_index"] == 1 and events[6]["call_id"] == "c1"
    final = events[-1]["response"]
    assert final["id"] == "resp_1" and final["status"] == "completed"
    assert final["usage"] == {"total_tokens": 35, "input_tokens": 30, "output_tokens": 5}
    assert final["waiting_for"] == {"tool_outputs": ["c1"], "approvals": []}
    failed = ResponseEvents("resp_2").failed("upstream_error", "the upstream provider failed (ref x)")
    assert [event["type"] for event in failed] == ["error", "response.done"]
    assert failed[1]["response"]["status"] == "failed"
