"""Sessions through a real server: ownership, push-to-talk, text turns with client tools, dangling calls and
approvals, with the chat model and speech providers played by fakes on their real wire protocols."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from earshot.store.records import UsageRecord
from tests.conftest import (
    ADMIN_TOKEN,
    Admin,
    free_port,
    sqlite_url,
    start_server,
    stop_server,
    usage_records,
    wait_until,
)
from tests.e2e.catalogs import FAKE_KEY_ENV, openai_model, tone_wav
from tests.e2e.sessions_client import Served, SessionsClient, done, of_type, sse_events, text_of
from tests.fakes.chat import CHAT_KEY, SECRET_MARKER, FakeChat, Reply, ScriptedCall, unanswered_calls
from tests.fakes.openai import OPENAI_KEY, FakeOpenAI
from tests.fakes.server import serving

CHAT_KEY_ENV = "EARSHOT_TEST_CHAT_KEY"
SPOKEN = "what is the weather in lisbon"
WIDGET_ORIGIN = "https://widget.example"
PUSH_TO_TALK_MAX_BYTES = 1024 * 1024
WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TRANSFER = {
    "type": "function",
    "name": "transfer",
    "requires_approval": True,
    "parameters": {"type": "object", "properties": {"amount": {"type": "number"}}},
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp: Path = tmp_path_factory.mktemp("sessions")
    chat, speech = FakeChat(), FakeOpenAI(SPOKEN)
    with serving(chat.app) as chat_server, serving(speech.app) as speech_server:
        closed = f"http://127.0.0.1:{free_port()}/v1"
        catalog = {
            "models": {
                "speech": openai_model(f"{speech_server.base_url}/v1"),
                # Nobody listens here: every call to it fails as the provider would.
                "failing": openai_model(closed),
                # Live streams only: push-to-talk must go to its one-shot fallback (it would fail itself).
                "live-only": openai_model(closed, capabilities=["stream", "realtime"], fallbacks=["speech"]),
            },
            "default_model": "speech",
            "chat_models": {
                "helper": {
                    "engine": "openai_compatible",
                    "base_url": f"{chat_server.base_url}/v1",
                    "api_key_env": CHAT_KEY_ENV,
                    "upstream_model": "gpt-4o-mini",
                    "timeout_s": 30,
                    "fallbacks": [],
                }
            },
            "default_chat_model": "helper",
        }
        path = tmp / "catalog.yaml"
        path.write_text(json.dumps(catalog))
        env = {
            "EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN,
            "EARSHOT_CONFIG": str(path),
            FAKE_KEY_ENV: OPENAI_KEY,
            CHAT_KEY_ENV: CHAT_KEY,
            "EARSHOT_CORS_ORIGINS": WIDGET_ORIGIN,
            "EARSHOT_PUSH_TO_TALK_MAX_BYTES": str(PUSH_TO_TALK_MAX_BYTES),
        }
        server = start_server(tmp, env)
        try:
            yield Served(server, sqlite_url(tmp), chat, Admin(server))
        finally:
            stop_server(server)


@pytest.fixture
def chat(served: Served) -> FakeChat:
    served.chat.reset()
    return served.chat


def client(served: Served) -> SessionsClient:
    key_id, key = served.admin.create_key(name="sessions")
    return SessionsClient(served.server.base_url, key, key_id)


def record_of(served: Served, sessions: SessionsClient, route: str) -> UsageRecord:
    """The one usage record of the client's key on `route`, once written."""

    def mine() -> list[UsageRecord]:
        return [
            r for r in usage_records(served.database_url) if r.key_id == sessions.key_id and r.route == route
        ]

    wait_until(lambda: bool(mine()), 5)
    [record] = mine()
    return record


def push_to_talk(sessions: SessionsClient, session_id: str, audio: bytes, **fields: str) -> httpx.Response:
    return sessions.http.post(
        f"/v1/sessions/{session_id}/transcribe", files={"file": ("clip.wav", audio, "audio/wav")}, data=fields
    )


def test_models_lists_the_chat_model_with_its_chat_capability(served: Served) -> None:
    cards = {card["id"]: card for card in client(served).http.get("/v1/models").json()["data"]}
    assert cards["helper"]["capabilities"] == ["chat"]
    assert "chat" not in cards["speech"]["capabilities"]


def test_another_keys_session_is_not_found_and_an_ended_one_takes_no_turns(served: Served) -> None:
    owner, stranger = client(served), client(served)
    session = owner.create(instructions="Be brief.", end_user="user-42")
    assert session["state"] == "active" and session["chat_model"] == "helper"
    path = f"/v1/sessions/{session['id']}"
    for response in (
        stranger.http.get(path),
        stranger.http.post(f"{path}/messages", json={"content": "hi"}),
        push_to_talk(stranger, session["id"], tone_wav(0.5)),
        stranger.http.post(f"{path}/end"),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "session_not_found"
    assert [s["id"] for s in stranger.http.get("/v1/sessions").json()["data"]] == []
    assert owner.http.post(f"{path}/end").json()["state"] == "ended"
    for response in (
        owner.http.post(f"{path}/messages", json={"content": "hi"}),
        push_to_talk(owner, session["id"], tone_wav(0.5)),
    ):
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "session_ended"
    assert owner.get(session["id"])["state"] == "ended"


def test_push_to_talk_returns_the_text_without_adding_it_and_meters_it(served: Served) -> None:
    sessions = client(served)
    session = sessions.create()
    response = push_to_talk(sessions, session["id"], tone_wav(1.0))
    assert response.status_code == 200, response.text
    assert response.json() == {"text": SPOKEN, "model": "speech", "duration": 1.0}
    assert sessions.get(session["id"])["items"] == []
    record = record_of(served, sessions, "sessions.transcribe")
    assert (record.model, record.audio_ms, record.outcome) == ("speech", 1000, "ok")


def test_push_to_talk_falls_back_from_a_streaming_only_model(served: Served) -> None:
    sessions = client(served)
    session = sessions.create()
    response = push_to_talk(sessions, session["id"], tone_wav(0.5), model="live-only")
    assert response.status_code == 200, response.text
    assert response.json()["text"] == SPOKEN and response.json()["model"] == "speech"


def test_push_to_talk_refuses_an_empty_clip_and_hides_a_provider_failure(served: Served) -> None:
    sessions = client(served)
    session = sessions.create()
    empty = push_to_talk(sessions, session["id"], b"")
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_file"
    bad_language = push_to_talk(sessions, session["id"], tone_wav(0.5), language="not a language")
    assert bad_language.status_code == 400 and bad_language.json()["error"]["param"] == "language"
    failed = push_to_talk(sessions, session["id"], tone_wav(0.5), model="failing")
    assert failed.status_code == 502, failed.text
    assert failed.json()["error"]["code"] == "upstream_error"
    assert "127.0.0.1" not in failed.text and OPENAI_KEY not in failed.text


def _tree_rss(pid: int) -> int:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


def test_push_to_talk_refuses_a_200_mb_clip_while_reading_it(served: Served) -> None:
    sessions = client(served)
    session = sessions.create()
    boundary = "ptt-boundary"
    chunk = b"\0" * (1024 * 1024)

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        for _ in range(200):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    rss_before = _tree_rss(served.server.process.pid)
    try:
        response: httpx.Response | None = sessions.http.post(
            f"/v1/sessions/{session['id']}/transcribe",
            content=body(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    except httpx.TransportError:
        # The server may answer 413 and close before the client has sent everything: a refusal too.
        response = None
    growth = _tree_rss(served.server.process.pid) - rss_before
    if response is not None:
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "request_too_large"
    assert growth < 50 * 1024 * 1024, f"the server grew by {growth / 2**20:.0f} MiB"
    assert push_to_talk(sessions, session["id"], tone_wav(0.5)).status_code == 200


def test_push_to_talk_has_its_own_per_ip_bucket_checked_before_ownership(served: Served) -> None:
    sessions = client(served)
    session = sessions.create()
    assert served.admin.http.put("/admin/settings", json={"push_to_talk_ip_rpm": 1}).status_code == 200
    try:
        assert push_to_talk(sessions, session["id"], tone_wav(0.5)).status_code == 200
        limited = push_to_talk(sessions, "sess_nobody_has_this", tone_wav(0.5))
        assert limited.status_code == 429, limited.text
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(limited.headers["retry-after"]) >= 1
        # Other routes keep their own bucket.
        assert sessions.http.get(f"/v1/sessions/{session['id']}").status_code == 200
    finally:
        served.admin.http.delete("/admin/settings/push_to_talk_ip_rpm")


def test_push_to_talk_answers_the_widgets_cors_preflight(served: Served) -> None:
    preflight = httpx.options(
        f"{served.server.base_url}/v1/sessions/sess_any/transcribe",
        headers={
            "Origin": WIDGET_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == WIDGET_ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    other = httpx.options(
        f"{served.server.base_url}/v1/sessions/sess_any/transcribe",
        headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers


def test_a_text_turn_streams_the_models_deltas_and_records_its_tokens(served: Served, chat: FakeChat) -> None:
    sessions = client(served)
    session = sessions.create(instructions="You are a terse assistant.")
    chat.script(Reply(text="Hello there, how can I help?", prompt_tokens=42, completion_tokens=8))
    events = sessions.say(session["id"], "Hi!")
    assert events[0]["type"] == "response.created"
    deltas = of_type(events, "response.output_text.delta")
    assert len(deltas) == 6 and text_of(events) == "Hello there, how can I help?"
    response = done(events)
    assert response["status"] == "completed"
    assert response["usage"] == {"total_tokens": 50, "input_tokens": 42, "output_tokens": 8}
    assert [item["type"] for item in response["output"]] == ["message"]
    sent = chat.requests[-1]
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"] == [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Hi!"},
    ]
    items = sessions.get(session["id"])["items"]
    assert [(item["role"], item["content"][0]["text"]) for item in items] == [
        ("user", "Hi!"),
        ("assistant", "Hello there, how can I help?"),
    ]
    record = record_of(served, sessions, "sessions.messages")
    assert (record.model, record.prompt_tokens, record.completion_tokens, record.outcome) == (
        "helper",
        42,
        8,
        "ok",
    )


def test_a_tool_call_pauses_the_turn_and_its_output_continues_it(served: Served, chat: FakeChat) -> None:
    sessions = client(served)
    session = sessions.create(tools=[WEATHER])
    call = ScriptedCall("weather", {"city": "Lisbon"}, pieces=4)
    chat.script(Reply(calls=(call,)), Reply(text="It is sunny in Lisbon."))
    paused = sessions.say(session["id"], "Weather in Lisbon?")
    [ready] = of_type(paused, "response.function_call_arguments.done")
    assert (ready["call_id"], ready["name"], json.loads(ready["arguments"])) == (
        call.call_id,
        "weather",
        {"city": "Lisbon"},
    )
    assert done(paused)["waiting_for"] == {"tool_outputs": [call.call_id], "approvals": []}
    assert chat.requests[-1]["tools"][0]["function"]["name"] == "weather"
    continued = sessions.answer(session["id"], call.call_id, '{"sky": "clear", "celsius": 24}')
    assert text_of(continued) == "It is sunny in Lisbon."
    assert "waiting_for" not in done(continued)
    last = chat.requests[-1]["messages"]
    assert last[-1] == {
        "role": "tool",
        "tool_call_id": call.call_id,
        "content": '{"sky": "clear", "celsius": 24}',
    }
    assert last[-2]["tool_calls"][0]["id"] == call.call_id
    again = sessions.http.post(
        f"/v1/sessions/{session['id']}/tool_outputs", json={"call_id": call.call_id, "output": "twice"}
    )
    assert again.status_code == 400 and again.json()["error"]["code"] == "unknown_call"


def test_a_dangling_call_is_answered_before_the_model_is_called_again(served: Served, chat: FakeChat) -> None:
    sessions = client(served)
    session = sessions.create(tools=[WEATHER])
    call = ScriptedCall("weather", {"city": "Porto"})
    chat.script(Reply(calls=(call,)), Reply(text="Sure, anything else?"))
    sessions.say(session["id"], "Weather in Porto?")
    # The client never runs the call; the user writes again later.
    resumed = sessions.say(session["id"], "Never mind.")
    assert text_of(resumed) == "Sure, anything else?"
    messages = chat.requests[-1]["messages"]
    assert unanswered_calls(messages) == []
    repaired = next(m for m in messages if m["role"] == "tool")
    assert repaired["tool_call_id"] == call.call_id and "abandoned" in repaired["content"]
    assert messages[-1] == {"role": "user", "content": "Never mind."}


def test_an_approved_call_goes_to_the_client_and_a_second_decision_loses(
    served: Served, chat: FakeChat
) -> None:
    sessions = client(served)
    session = sessions.create(tools=[TRANSFER])
    call = ScriptedCall("transfer", {"amount": 20})
    chat.script(Reply(calls=(call,)), Reply(text="The transfer is done."))
    paused = sessions.say(session["id"], "Send 20 to Ana.")
    assert of_type(paused, "response.function_call_arguments.done") == []
    [request] = [item for item in done(paused)["output"] if item["type"] == "mcp_approval_request"]
    assert (request["server_label"], request["name"], json.loads(request["arguments"])) == (
        "earshot",
        "transfer",
        {"amount": 20},
    )
    approved = sessions.decide(session["id"], request["id"], True, "ok by me")
    assert approved.status_code == 200, approved.text
    [ready] = of_type(
        list(sse_events(iter(approved.text.splitlines()))), "response.function_call_arguments.done"
    )
    assert ready["call_id"] == call.call_id
    late = sessions.decide(session["id"], request["id"], False, "changed my mind")
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "already_decided"
    assert late.json()["decision"] == {"approve": True, "reason": "ok by me"}
    finished = sessions.answer(session["id"], call.call_id, '{"status": "sent"}')
    assert text_of(finished) == "The transfer is done."
    items = sessions.get(session["id"])["items"]
    assert [item["type"] for item in items] == [
        "message",
        "function_call",
        "mcp_approval_request",
        "mcp_approval_response",
        "function_call_output",
        "message",
    ]
    assert items[2]["decision"] == {"approve": True, "reason": "ok by me"}
    # Each decision is metered once: the winner's turn, and the loser's refusal.
    outcomes = [
        r.outcome
        for r in usage_records(served.database_url)
        if r.key_id == sessions.key_id and r.route == "sessions.approvals"
    ]
    assert sorted(outcomes, key=str) == ["ok", "rejected"]


def test_a_denied_call_is_given_to_the_model_as_the_tools_result(served: Served, chat: FakeChat) -> None:
    sessions = client(served)
    session = sessions.create(tools=[TRANSFER])
    chat.script(
        Reply(calls=(ScriptedCall("transfer", {"amount": 900}),)), Reply(text="Okay, I will not send it.")
    )
    paused = sessions.say(session["id"], "Send 900 to Ana.")
    [request] = [item for item in done(paused)["output"] if item["type"] == "mcp_approval_request"]
    denied = sessions.decide(session["id"], request["id"], False, "too much")
    assert denied.status_code == 200, denied.text
    assert text_of(list(sse_events(iter(denied.text.splitlines())))) == "Okay, I will not send it."
    tool_message = chat.requests[-1]["messages"][-1]
    assert tool_message["role"] == "tool"
    assert json.loads(tool_message["content"]) == {"error": "the user denied this call", "reason": "too much"}


def test_a_failing_chat_model_ends_the_turn_with_a_generic_error(served: Served, chat: FakeChat) -> None:
    sessions = client(served)
    session = sessions.create()
    chat.script(Reply(status=500))
    events = sessions.say(session["id"], "Hello?")
    [error] = of_type(events, "error")
    assert error["error"]["code"] == "upstream_error"
    assert done(events)["status"] == "failed"
    text = json.dumps(events)
    assert SECRET_MARKER not in text and CHAT_KEY not in text and "127.0.0.1" not in text


def test_a_second_turn_while_one_runs_is_session_busy_and_a_leaving_client_frees_it(
    served: Served, chat: FakeChat
) -> None:
    sessions = client(served)
    session = sessions.create()
    hold = threading.Event()
    chat.script(Reply(text="A slow answer.", hold=hold))
    path = f"/v1/sessions/{session['id']}/messages"
    try:
        with sessions.http.stream("POST", path, json={"content": "first"}) as first:
            assert first.status_code == 200
            wait_until(lambda: len(chat.requests) == 1, 5)
            busy = sessions.http.post(path, json={"content": "second"})
            assert busy.status_code == 409, busy.text
            assert busy.json()["error"]["code"] == "session_busy"
        # The first client left mid-turn: the session takes turns again.
        wait_until(lambda: sessions.http.post(path, json={"content": "third"}).status_code == 200, 10)
    finally:
        hold.set()
