"""ConversationProtocol without I/O: the conversation session on the wire, what starts and cancels a
response, client items, and the voice turn loop's events rendered as Realtime response events."""

from __future__ import annotations

import base64
import json
from typing import Any

from earshot.api.live.actions import Action, Configure, Send
from earshot.api.realtime.conversation import (
    CancelResponse,
    ConversationProtocol,
    DecideApproval,
    Reconfigure,
    Remember,
    Respond,
    Truncate,
)
from earshot.api.realtime.conversation_events import ConversationSettings
from earshot.api.realtime.session import RealtimeSettings
from earshot.streaming.events import Final, SpeechStarted, SpeechStopped, UtteranceEnd
from earshot.streaming.live_config import LiveConfig
from earshot.voice.voice_events import (
    AnswerAudio,
    AnswerStarted,
    AnswerText,
    ResponseFinished,
    ResponseStarted,
)


def new_protocol() -> ConversationProtocol:
    settings = ConversationSettings(
        hearing=RealtimeSettings(id="sess_hearing", model="whisper-1"), agent="assistant", session_id="sess_1"
    )
    return ConversationProtocol(settings, lambda model: "whisper-tiny.en", LiveConfig())


def event(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


def sent(actions: list[Action]) -> list[dict[str, Any]]:
    return [json.loads(a.message) for a in actions if isinstance(a, Send) and isinstance(a.message, str)]


def test_session_created_is_a_realtime_conversation_session() -> None:
    [created] = sent(new_protocol().opened())
    session = created["session"]
    assert created["type"] == "session.created"
    assert session["type"] == "realtime" and session["id"] == "sess_1" and session["model"] == "assistant"
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    detection = session["audio"]["input"]["turn_detection"]
    assert detection["type"] == "server_vad" and detection["interrupt_response"] is True


def test_session_update_changes_instructions_tools_voice_turn_detection_and_output() -> None:
    protocol = new_protocol()
    tool = {"type": "function", "name": "weather", "parameters": {}}
    update = {
        "type": "realtime",
        "instructions": "Be brief.",
        "tools": [tool],
        "output_modalities": ["text"],
        "audio": {
            "input": {
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 800, "create_response": False}
            },
            "output": {"voice": "coral"},
        },
    }
    actions = protocol.receive_text(event("session.update", session=update))
    [reconfigure] = [a for a in actions if isinstance(a, Reconfigure)]
    assert reconfigure.settings.instructions == "Be brief." and reconfigure.settings.tools == (tool,)
    assert reconfigure.settings.voice == "coral" and reconfigure.settings.text_only
    [configure] = [a for a in actions if isinstance(a, Configure)]
    assert configure.config.vad is not None and configure.config.vad.silence_duration_ms == 800
    [updated] = sent(actions)
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["turn_detection"]["create_response"] is False


def test_a_transcription_session_update_is_refused_here() -> None:
    actions = new_protocol().receive_text(event("session.update", session={"type": "transcription"}))
    [error] = sent(actions)
    assert error["type"] == "error" and error["error"]["param"] == "session.type"


def test_the_end_of_a_user_turn_starts_a_response_with_its_transcript() -> None:
    protocol = new_protocol()
    protocol.on_event(SpeechStarted(t=0.2))
    protocol.on_event(SpeechStopped(t=1.5))
    protocol.on_event(Final(text="What time is it?", start=0.2, end=1.5))
    actions = protocol.on_event(UtteranceEnd(t=1.5))
    [respond] = [a for a in actions if isinstance(a, Respond)]
    assert respond.opening[0].data["content"][0]["text"] == "What time is it?"
    assert "conversation.item.input_audio_transcription.completed" in [m["type"] for m in sent(actions)]


def test_speech_over_a_response_cancels_it_before_anything_else() -> None:
    protocol = new_protocol()
    protocol.on_voice(ResponseStarted("resp_1"))
    actions = protocol.on_event(SpeechStarted(t=3.0))
    assert isinstance(actions[0], CancelResponse)
    assert sent(actions)[0]["type"] == "input_audio_buffer.speech_started"
    protocol.on_voice(ResponseFinished("resp_1", "cancelled", [], {}))
    assert not any(isinstance(a, CancelResponse) for a in protocol.on_event(SpeechStarted(t=5.0)))


def test_response_create_cancel_and_truncate() -> None:
    protocol = new_protocol()
    assert [type(a) for a in protocol.receive_text(event("response.create"))] == [Respond]
    [error] = sent(protocol.receive_text(event("response.cancel", event_id="e1")))
    assert error["error"]["code"] == "response_cancel_not_active" and error["error"]["event_id"] == "e1"
    protocol.on_voice(ResponseStarted("resp_1"))
    [busy] = sent(protocol.receive_text(event("response.create")))
    assert busy["error"]["code"] == "conversation_already_has_active_response"
    assert [type(a) for a in protocol.receive_text(event("response.cancel"))] == [CancelResponse]
    actions = protocol.receive_text(
        event("conversation.item.truncate", item_id="item_9", content_index=0, audio_end_ms=1200)
    )
    assert actions[0] == Truncate("item_9", 1200)
    assert sent(actions)[0]["type"] == "conversation.item.truncated"


def test_client_items_user_text_call_output_and_approval() -> None:
    protocol = new_protocol()
    text = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Next slide"}]}
    [remember, *_] = protocol.receive_text(event("conversation.item.create", item=text))
    assert isinstance(remember, Remember) and remember.items[0].data["content"][0]["text"] == "Next slide"
    output = {"type": "function_call_output", "call_id": "call_1", "output": "{}"}
    [remember, *_] = protocol.receive_text(event("conversation.item.create", item=output))
    assert isinstance(remember, Remember) and remember.answered_call
    approval = {
        "type": "mcp_approval_response",
        "approval_request_id": "mcpr_1",
        "approve": False,
        "reason": "no",
    }
    assert protocol.receive_text(event("conversation.item.create", item=approval)) == [
        DecideApproval("mcpr_1", False, "no")
    ]
    [error] = sent(
        protocol.receive_text(event("conversation.item.create", item={"type": "message", "content": []}))
    )
    assert error["error"]["param"] == "item.content"


def test_voice_events_become_response_events() -> None:
    protocol = new_protocol()
    kinds = [m["type"] for m in sent(protocol.on_voice(ResponseStarted("resp_1")))]
    kinds += [m["type"] for m in sent(protocol.on_voice(AnswerStarted("resp_1", "item_1")))]
    [transcript] = sent(protocol.on_voice(AnswerText("resp_1", "item_1", "Hello. ")))
    [audio] = sent(protocol.on_voice(AnswerAudio("resp_1", "item_1", b"\x01\x00" * 10)))
    output = [
        {
            "id": "item_1",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello."}],
        }
    ]
    [done] = sent(protocol.on_voice(ResponseFinished("resp_1", "completed", output, {"total_tokens": 3})))
    assert kinds == ["response.created", "response.output_item.added", "conversation.item.added"]
    assert transcript["type"] == "response.output_audio_transcript.delta" and transcript["delta"] == "Hello. "
    assert (
        audio["type"] == "response.output_audio.delta"
        and base64.b64decode(audio["delta"]) == b"\x01\x00" * 10
    )
    assert done["response"]["status"] == "completed"
    assert done["response"]["output"][0]["content"] == [{"type": "output_audio", "transcript": "Hello."}]
    assert not protocol.responding
