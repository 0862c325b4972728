"""The voice agent through a real server with the official SDK's `client.realtime`: a spoken question, the
fake chat model's answer spoken by espeak-ng and heard back by the default engine, barge-in, tools, text turns
beside a voice turn, and the one usage record of each session."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI

from earshot.store.records import UsageRecord
from tests.conftest import (
    ADMIN_TOKEN,
    Admin,
    sqlite_url,
    start_server,
    stop_server,
    usage_records,
    wait_until,
)
from tests.e2e.realtime_client import EventLog, as_wav, chunks, paced, pcm24, silence, speech, trimmed
from tests.e2e.sessions_client import Served, SessionsClient
from tests.e2e.wer import words
from tests.fakes.chat import CHAT_KEY, FakeChat, Reply, ScriptedCall
from tests.fakes.server import serving

CHAT_KEY_ENV = "EARSHOT_TEST_CHAT_KEY"
GOFORWARD = "pocketsphinx-testdata/goforward.wav"
ANSWER = "The weather is sunny and warm."
LONG_ANSWER = " ".join(f"Sentence number {n} goes on for a while." for n in range(1, 13))
AGENT = "assistant"
ROUTE = "/v1/realtime.conversation"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp: Path = tmp_path_factory.mktemp("voice")
    chat = FakeChat()
    with serving(chat.app) as chat_server:
        catalog = {
            "chat_models": {
                "helper": {
                    "engine": "openai_compatible",
                    "base_url": f"{chat_server.base_url}/v1",
                    "api_key_env": CHAT_KEY_ENV,
                }
            },
            "voice_agents": {
                AGENT: {
                    "speech_model": "whisper-tiny.en",
                    "chat_model": "helper",
                    "voice": "default",
                    "instructions": "You are a helpful assistant.",
                    "filler_after_ms": 300,
                }
            },
        }
        path = tmp / "catalog.yaml"
        path.write_text(json.dumps(catalog))
        env = {"EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN, "EARSHOT_CONFIG": str(path), CHAT_KEY_ENV: CHAT_KEY}
        server = start_server(tmp, env)
        try:
            yield Served(server, sqlite_url(tmp), chat, Admin(server))
        finally:
            stop_server(server)


@pytest.fixture
def chat(served: Served) -> FakeChat:
    served.chat.reset()
    return served.chat


@dataclass
class Caller:
    key_id: str
    key: str
    sdk: AsyncOpenAI
    sessions: SessionsClient


def caller(served: Served) -> Caller:
    key_id, key = served.admin.create_key(name="voice")
    sdk = AsyncOpenAI(base_url=f"{served.server.base_url}/v1", api_key=key, max_retries=0)
    return Caller(key_id, key, sdk, SessionsClient(served.server.base_url, key, key_id))


def question() -> list[str]:
    audio = np.concatenate([silence(0.3), trimmed(speech(GOFORWARD)), silence(1.2)])
    return chunks(pcm24(audio), 48_000, 40)


async def speak_question(connection: Any) -> None:
    async def append(payload: str) -> None:
        await connection.input_audio_buffer.append(audio=payload)

    await paced(question(), 40, append, speed=2.0)


async def read_until(
    connection: Any, log: EventLog, kind: str, count: int = 1, timeout_s: float = 60
) -> None:
    async with asyncio.timeout(timeout_s):
        while len(log.of(kind)) < count:
            log.add((await connection.recv()).to_dict())


def heard(served: Served, key: str, pcm16: bytes) -> list[str]:
    """The default engine's words for the audio the agent sent."""
    response = httpx.post(
        f"{served.server.base_url}/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {key}"},
        files={"file": ("answer.wav", as_wav(pcm16), "audio/wav")},
        data={"model": "whisper-1"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return words(response.json()["text"])


def audio_of(log: EventLog, response_id: str) -> bytes:
    return b"".join(
        base64.b64decode(e["delta"])
        for e in log.of("response.output_audio.delta")
        if e["response_id"] == response_id
    )


def records(served: Served, key_id: str) -> list[UsageRecord]:
    return [r for r in usage_records(served.database_url) if r.key_id == key_id and r.route == ROUTE]


async def one_record(served: Served, key_id: str) -> UsageRecord:
    """The session's one usage record, once written (read off the event loop: the reader runs its own)."""

    def read() -> list[UsageRecord]:
        wait_until(lambda: bool(records(served, key_id)), 5)
        return records(served, key_id)

    [record] = await asyncio.to_thread(read)
    return record


def test_models_list_the_voice_agent(served: Served) -> None:
    cards = httpx.get(f"{served.server.base_url}/v1/models").json()["data"]
    [card] = [c for c in cards if c["id"] == AGENT]
    assert card["capabilities"] == ["realtime-conversation"]


async def test_a_spoken_question_gets_a_spoken_answer(served: Served, chat: FakeChat) -> None:
    chat.script(Reply(text=ANSWER))
    me = caller(served)
    log = EventLog()
    async with me.sdk.realtime.connect(model=AGENT) as connection:
        created = (await connection.recv()).to_dict()
        assert created["type"] == "session.created"
        session_id = created["session"]["id"]
        assert created["session"]["type"] == "realtime"
        await speak_question(connection)
        await read_until(connection, log, "response.done")
        # All the answer was sent, but the client played only 700 ms of it before the person spoke again.
        answer_id = log.of("response.done")[0]["response"]["output"][0]["id"]
        await connection.conversation.item.truncate(item_id=answer_id, content_index=0, audio_end_ms=700)
        await read_until(connection, log, "conversation.item.truncated")
    [completed] = log.completed
    assert completed["transcript"] == "Go forward 10 meters."
    [done] = log.of("response.done")
    assert done["response"]["status"] == "completed"
    response_id = done["response"]["id"]
    transcript = "".join(e["delta"] for e in log.of("response.output_audio_transcript.delta"))
    assert transcript.split() == ANSWER.split()
    assert set(heard(served, me.key, audio_of(log, response_id))) >= {"weather", "sunny", "warm"}
    sent = chat.requests[-1]["messages"]
    assert sent[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert sent[-1]["content"] == "Go forward 10 meters."
    items = me.sessions.get(session_id)["items"]
    assert [item["type"] for item in items] == ["message", "message"]
    cut = items[1]["content"][0]["text"]
    assert cut and ANSWER.startswith(cut) and len(cut) < len(ANSWER), "history holds what was played"
    record = await one_record(served, me.key_id)
    assert record.outcome in ("ok", "client_closed")
    assert record.audio_ms > 2000
    assert record.characters == len(ANSWER)
    assert record.prompt_tokens == 21 and record.completion_tokens == 9


async def test_barge_in_cancels_the_answer_and_history_keeps_what_was_sent(
    served: Served, chat: FakeChat
) -> None:
    chat.script(Reply(text=LONG_ANSWER), Reply(text=ANSWER))
    me = caller(served)
    log = EventLog()
    async with me.sdk.realtime.connect(model=AGENT) as connection:
        session_id = (await connection.recv()).to_dict()["session"]["id"]
        await speak_question(connection)
        await read_until(connection, log, "response.output_audio.delta", count=5)
        barging = asyncio.create_task(speak_question(connection))
        await read_until(connection, log, "response.done", count=2, timeout_s=90)
        await barging
    first, second = log.of("response.done")
    assert first["response"]["status"] == "cancelled"
    assert second["response"]["status"] == "completed"
    cancelled_id = first["response"]["id"]
    done_at = next(i for i, (_, e) in enumerate(log.events) if e is first)
    late = [e for _, e in log.events[done_at:] if e.get("response_id") == cancelled_id]
    assert not late, "nothing of the cancelled response after its response.done"
    sent = "".join(
        e["delta"]
        for e in log.of("response.output_audio_transcript.delta")
        if e["response_id"] == cancelled_id
    )
    items = me.sessions.get(session_id)["items"]
    assistant = [
        i["content"][0]["text"] for i in items if i["type"] == "message" and i["role"] == "assistant"
    ]
    cut = assistant[0]
    assert cut and LONG_ANSWER.startswith(cut) and len(cut) < len(LONG_ANSWER)
    assert sent.strip().startswith(cut), "history holds no more than was sent"
    assert assistant[1] == ANSWER
    record = await one_record(served, me.key_id)
    assert record.characters < len(LONG_ANSWER) + len(ANSWER)


async def test_a_tool_call_round_trip_with_the_filler_spoken(served: Served, chat: FakeChat) -> None:
    call = ScriptedCall("weather", {"city": "Lisbon"})
    chat.script(Reply(calls=(call,)), Reply(text=ANSWER))
    me = caller(served)
    log = EventLog()
    weather = {"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {}}}
    async with me.sdk.realtime.connect(model=AGENT) as connection:
        await connection.recv()
        await connection.session.update(session={"type": "realtime", "tools": [weather]})
        await speak_question(connection)
        await read_until(connection, log, "response.function_call_arguments.done")
        [arguments] = log.of("response.function_call_arguments.done")
        assert arguments["name"] == "weather" and json.loads(arguments["arguments"]) == {"city": "Lisbon"}
        # The client's tool takes its time: the filler is spoken meanwhile, once.
        await read_until(connection, log, "response.done", count=2)
        await connection.conversation.item.create(
            item={
                "type": "function_call_output",
                "call_id": arguments["call_id"],
                "output": '{"sky": "sunny"}',
            }
        )
        await connection.response.create()
        await read_until(connection, log, "response.done", count=3)
    filler = [e["delta"] for e in log.of("response.output_audio_transcript.delta") if "moment" in e["delta"]]
    assert filler == ["One moment. "]
    statuses = [e["response"]["status"] for e in log.of("response.done")]
    assert statuses == ["completed"] * 3
    last = log.of("response.done")[-1]["response"]
    assert set(heard(served, me.key, audio_of(log, last["id"]))) >= {"weather", "sunny"}
    tool_message = chat.requests[-1]["messages"][-1]
    assert tool_message == {
        "role": "tool",
        "tool_call_id": arguments["call_id"],
        "content": '{"sky": "sunny"}',
    }


async def test_an_approval_decided_over_http_while_the_socket_waits(served: Served, chat: FakeChat) -> None:
    call = ScriptedCall("transfer", {"amount": 5})
    chat.script(Reply(calls=(call,)))
    me = caller(served)
    log = EventLog()
    transfer = {"type": "function", "name": "transfer", "requires_approval": True, "parameters": {}}
    async with me.sdk.realtime.connect(model=AGENT) as connection:
        session_id = (await connection.recv()).to_dict()["session"]["id"]
        await connection.session.update(session={"type": "realtime", "tools": [transfer]})
        await speak_question(connection)
        await read_until(connection, log, "response.done")
        [request] = [
            e["item"]
            for e in log.of("response.output_item.added")
            if e["item"]["type"] == "mcp_approval_request"
        ]
        question = "".join(e["delta"] for e in log.of("response.output_audio_transcript.delta"))
        assert "transfer?" in question
        decided = await asyncio.to_thread(me.sessions.decide, session_id, request["id"], True)
        assert decided.status_code == 202, decided.text
        await read_until(connection, log, "response.function_call_arguments.done")
        again = await asyncio.to_thread(me.sessions.decide, session_id, request["id"], False)
        assert again.status_code == 409 and again.json()["error"]["code"] == "already_decided"
    [arguments] = log.of("response.function_call_arguments.done")
    assert arguments["name"] == "transfer" and arguments["call_id"] == call.call_id


async def test_a_text_turn_while_a_voice_turn_runs_is_session_busy(served: Served, chat: FakeChat) -> None:
    hold = threading.Event()
    chat.script(Reply(text=ANSWER, hold=hold))
    me = caller(served)
    log = EventLog()
    async with me.sdk.realtime.connect(model=AGENT) as connection:
        session_id = (await connection.recv()).to_dict()["session"]["id"]
        await speak_question(connection)
        await read_until(connection, log, "response.created")
        busy = await asyncio.to_thread(
            me.sessions.http.post, f"/v1/sessions/{session_id}/messages", json={"content": "hello?"}
        )
        hold.set()
        await read_until(connection, log, "response.done")
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "session_busy"
    assert log.of("response.done")[0]["response"]["status"] == "completed"


async def test_another_keys_session_is_refused_like_a_missing_one(served: Served) -> None:
    owner, stranger = caller(served), caller(served)
    session_id = owner.sessions.create(chat_model="helper")["id"]
    async with stranger.sdk.realtime.connect(
        model=AGENT, extra_query={"session_id": session_id}
    ) as connection:
        event = (await connection.recv()).to_dict()
    assert event["type"] == "error" and event["error"]["code"] == "session_not_found"
    record = await one_record(served, stranger.key_id)
    assert record.outcome == "rejected"


async def test_a_key_limited_to_models_uses_the_agents_it_lists_not_the_speech_model(served: Served) -> None:
    async def first_event(models: list[str]) -> dict[str, Any]:
        _, key = served.admin.create_key(name="limited", models=models)
        sdk = AsyncOpenAI(base_url=f"{served.server.base_url}/v1", api_key=key, max_retries=0)
        async with sdk.realtime.connect(model=AGENT) as connection:
            return (await connection.recv()).to_dict()

    assert (await first_event([AGENT]))["type"] == "session.created", "the agent brings its own models"
    refused = await first_event(["whisper-tiny.en"])
    assert refused["type"] == "error" and refused["error"]["code"] == "model_not_allowed"


async def test_attaching_to_a_session_continues_its_conversation(served: Served, chat: FakeChat) -> None:
    me = caller(served)
    session_id = me.sessions.create(chat_model="helper")["id"]
    me.sessions.say(session_id, "Remember the word blue.")
    chat.script(Reply(text=ANSWER))
    log = EventLog()
    async with me.sdk.realtime.connect(model=AGENT, extra_query={"session_id": session_id}) as connection:
        assert (await connection.recv()).to_dict()["session"]["id"] == session_id
        await connection.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await connection.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Which word?"}],
            }
        )
        await connection.response.create()
        await read_until(connection, log, "response.done")
    assert not log.of("response.output_audio.delta"), "text only"
    assert "".join(e["delta"] for e in log.of("response.output_text.delta")) == ANSWER
    contents = [m["content"] for m in chat.requests[-1]["messages"]]
    assert contents[-3:] == ["Remember the word blue.", "Hello from the fake chat model.", "Which word?"]


async def test_a_revoked_key_ends_the_conversation_with_one_record(served: Served, chat: FakeChat) -> None:
    me = caller(served)
    log = EventLog()
    async with me.sdk.realtime.connect(model=AGENT) as connection:
        await connection.recv()
        await asyncio.to_thread(served.admin.revoke, me.key_id)
        with contextlib.suppress(Exception):
            await read_until(connection, log, "error", timeout_s=30)
    assert log.of("error")[0]["error"]["code"] == "invalid_api_key"
    record = await one_record(served, me.key_id)
    assert record.outcome == "revoked"


async def test_running_out_of_credit_mid_question_ends_with_one_record(
    served: Served, chat: FakeChat
) -> None:
    key_id, key = served.admin.create_key(name="voice", credits_seconds=1)
    sdk = AsyncOpenAI(base_url=f"{served.server.base_url}/v1", api_key=key, max_retries=0)
    log = EventLog()
    async with sdk.realtime.connect(model=AGENT) as connection:
        await connection.recv()
        with contextlib.suppress(Exception):
            await speak_question(connection)
        with contextlib.suppress(Exception):
            await read_until(connection, log, "error", timeout_s=30)
    assert log.of("error")[0]["error"]["code"] == "insufficient_quota"
    record = await one_record(served, key_id)
    assert record.outcome == "insufficient_credits" and record.debited_ms == 1000
    assert not chat.requests, "no turn ran on credit it did not have"


async def test_a_client_that_leaves_mid_answer_leaves_one_record_and_what_it_heard(
    served: Served, chat: FakeChat
) -> None:
    chat.script(Reply(text=LONG_ANSWER))
    me = caller(served)
    log = EventLog()
    async with me.sdk.realtime.connect(model=AGENT) as connection:
        session_id = (await connection.recv()).to_dict()["session"]["id"]
        await speak_question(connection)
        await read_until(connection, log, "response.output_audio.delta", count=5)
    record = await one_record(served, me.key_id)
    assert record.outcome in ("ok", "client_closed")
    assert 0 < record.characters < len(LONG_ANSWER)
    items = me.sessions.get(session_id)["items"]
    [cut] = [i["content"][0]["text"] for i in items if i["type"] == "message" and i["role"] == "assistant"]
    assert cut and LONG_ANSWER.startswith(cut) and len(cut) < len(LONG_ANSWER)
