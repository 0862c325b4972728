"""The voice agent through a real server with the official SDK's `client.realtime`: a spoken question, the
fake chat model's answer spoken by espeak-ng and heard back by the default engine, barge-in, tools, text turns
beside a voice turn, and the one usage record of each session."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import wave
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
    RunningServer,
    sqlite_url,
    start_server,
    stop_server,
    usage_records,
    wait_until,
)
from tests.e2e.realtime_client import EventLog, chunks, paced, pcm24, silence, speech, trimmed
from tests.e2e.sessions_client import SessionsClient
from tests.e2e.wer import words
from tests.fakes.chat import CHAT_KEY, FakeChat, Reply
from tests.fakes.server import serving

CHAT_KEY_ENV = "EARSHOT_TEST_CHAT_KEY"
GOFORWARD = "pocketsphinx-testdata/goforward.wav"
ANSWER = "The weather is sunny and warm."
LONG_ANSWER = " ".join(f"Sentence number {n} goes on for a while." for n in range(1, 13))
AGENT = "assistant"
ROUTE = "/v1/realtime.conversation"


@dataclass
class Served:
    server: RunningServer
    database_url: str
    chat: FakeChat
    admin: Admin


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


def wav_of(pcm16: bytes) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(24_000)
        out.writeframes(pcm16)
    return buffer.getvalue()


def heard(served: Served, key: str, pcm16: bytes) -> list[str]:
    """The default engine's words for the audio the agent sent."""
    response = httpx.post(
        f"{served.server.base_url}/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {key}"},
        files={"file": ("answer.wav", wav_of(pcm16), "audio/wav")},
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
    record = await one_record(served, me.key_id)
    assert record.outcome in ("ok", "client_closed")
    assert record.audio_ms > 2000
    assert record.characters == len(ANSWER)
    assert record.prompt_tokens == 21 and record.completion_tokens == 9
