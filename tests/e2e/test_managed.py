"""WS /ws/transcribe end to end: auth in the first message, refusals, credit, session_end, ready first."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from earshot.audio.pcm import float_to_pcm16
from earshot.client import StreamingTranscriber
from tests.conftest import (
    ADMIN_TOKEN,
    Admin,
    RunningServer,
    sqlite_url,
    start_server,
    stop_server,
)
from tests.e2e.realtime_client import speech
from tests.e2e.session_end import finished_records, until_closed

AUTH_TIMEOUT_S = 1.0
CHUNK_MS = 100
BYTES_PER_CHUNK = 16_000 * 2 * CHUNK_MS // 1000
# Real speech at 16 kHz, looped, as 100 ms frames: every frame is exactly 100 ms of metered audio.
SPEECH = float_to_pcm16(np.tile(speech("pocketsphinx-testdata/goforward.wav"), 4))
FRAMES = [SPEECH[i : i + BYTES_PER_CHUNK] for i in range(0, len(SPEECH) - BYTES_PER_CHUNK, BYTES_PER_CHUNK)]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str]]:
    """A server with keys, an admin token and a one-second auth timeout, and its database URL."""
    tmp = tmp_path_factory.mktemp("managed")
    env = {"EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN, "EARSHOT_WS_AUTH_TIMEOUT_S": str(AUTH_TIMEOUT_S)}
    server = start_server(tmp, env)
    try:
        yield server, sqlite_url(tmp)
    finally:
        stop_server(server)


def ws_url(server: RunningServer) -> str:
    return server.base_url.replace("http://", "ws://") + "/ws/transcribe"


def auth(key: str, **config: Any) -> str:
    return json.dumps({"type": "auth", "token": key, "config": {"sample_rate": 16000, **config}})


def of_type(messages: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [message for message in messages if message["type"] == kind]


async def test_no_auth_message_in_time_is_an_auth_error(keyed: tuple[RunningServer, str]) -> None:
    server, _ = keyed
    Admin(server).create_key()
    async with websockets.connect(ws_url(server)) as ws:
        started = time.monotonic()
        messages, code = await until_closed(ws)
    waited = time.monotonic() - started
    assert AUTH_TIMEOUT_S - 0.1 <= waited <= AUTH_TIMEOUT_S + 1.5
    assert [(m["type"], m["code"]) for m in messages] == [("error", "AUTH_FAILED")] and code == 1008
    assert "no auth message within 1 s" in messages[0]["message"]


async def test_audio_before_auth_and_a_bad_config_are_bad_requests(keyed: tuple[RunningServer, str]) -> None:
    server, _ = keyed
    _, key = Admin(server).create_key()
    for first in (FRAMES[0], auth(key, sample_rate=2), auth(key, encoding="opus"), "hello"):
        async with websockets.connect(ws_url(server)) as ws:
            await ws.send(first)
            messages, code = await until_closed(ws)
        assert [(m["type"], m["code"]) for m in messages] == [("error", "BAD_REQUEST")] and code == 4400


async def test_a_bad_key_or_a_forbidden_model_is_refused_without_a_usage_record(
    keyed: tuple[RunningServer, str],
) -> None:
    server, url = keyed
    admin = Admin(server)
    for token in ("es_000000000000_wrong", ""):
        async with websockets.connect(ws_url(server)) as ws:
            await ws.send(auth(token))
            messages, code = await until_closed(ws)
        assert [(m["type"], m["code"]) for m in messages] == [("error", "AUTH_FAILED")] and code == 1008
        assert "es_000000000000_wrong" not in messages[0]["message"]
    key_id, key = admin.create_key(models=["some-other-model"])
    async with websockets.connect(ws_url(server)) as ws:
        await ws.send(auth(key, model="pocketsphinx"))
        messages, code = await until_closed(ws)
    assert [(m["type"], m["code"]) for m in messages] == [("error", "MODEL_NOT_ALLOWED")] and code == 1008
    records = await finished_records(url, key_id)
    assert [(r.outcome, r.audio_ms) for r in records] == [("rejected", 0)]


async def test_session_end_counts_exactly_the_audio_sent(keyed: tuple[RunningServer, str]) -> None:
    server, url = keyed
    key_id, key = Admin(server).create_key()
    async with websockets.connect(ws_url(server)) as ws:
        await ws.send(auth(key))
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready" and ready["model"] == "whisper-tiny.en"
        for frame in FRAMES[:15]:
            await ws.send(frame)
        await ws.send(b"\x00\x00" * 16 + b"\x00")  # 1 ms and half a sample: the half is not audio
        await ws.send('{"type": "close"}')
        messages, code = await until_closed(ws)
    assert code == 1000 and messages[-1] == {"type": "session_end", "seconds_used": 1.501}
    assert of_type(messages, "error") == []
    assert " ".join(m["text"] for m in of_type(messages, "transcript") if m["is_final"]), "speech gives text"
    (record,) = await finished_records(url, key_id)
    assert (record.outcome, record.audio_ms, record.route) == ("ok", 1501, "/ws/transcribe")


async def test_credits_low_comes_once_then_insufficient_credits_ends_with_one_record(
    keyed: tuple[RunningServer, str],
) -> None:
    server, url = keyed
    admin = Admin(server)
    key_id, key = admin.create_key(credits_seconds=2)
    async with websockets.connect(ws_url(server)) as ws:
        await ws.send(auth(key))
        assert json.loads(await ws.recv())["type"] == "ready"
        closing = asyncio.create_task(until_closed(ws))
        with pytest.raises(websockets.ConnectionClosed):
            for frame in FRAMES[:50]:
                await ws.send(frame)
                await asyncio.sleep(CHUNK_MS / 1000)
        messages, code = await closing
    low = of_type(messages, "credits_low")
    assert len(low) == 1 and 0 < low[0]["seconds_remaining"] <= 2
    kinds = [m["type"] for m in messages]
    assert kinds.index("credits_low") < kinds.index("error")
    assert [m["code"] for m in of_type(messages, "error")] == ["INSUFFICIENT_CREDITS"] and code == 1008
    assert messages[-1]["type"] == "session_end"
    (record,) = await finished_records(url, key_id)
    assert record.outcome == "insufficient_credits" and record.debited_ms == 2000
    assert (
        messages[-1]["seconds_used"] == record.audio_ms / 1000 and 2.0 < messages[-1]["seconds_used"] <= 2.5
    )
    assert admin.key(key_id)["credits_seconds"] == 0


@dataclass
class DelayLog:
    """What the delaying relay saw: when it let `ready` through, and audio it had to drop before then."""

    ready_sent_at: float | None = None
    dropped_bytes: int = 0
    forwarded_bytes: int = 0
    first_audio_at: float | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)


@asynccontextmanager
async def delaying_relay(upstream: str, delay_s: float) -> AsyncIterator[tuple[str, DelayLog]]:
    """A /ws/transcribe in front of earshot's that holds `ready` back, dropping audio that comes before it."""
    log = DelayLog()

    async def handler(client: ServerConnection) -> None:
        async with websockets.connect(upstream) as server:
            released = asyncio.Event()

            async def down() -> None:
                async for message in server:
                    parsed = json.loads(message)
                    log.messages.append(parsed)
                    if parsed["type"] == "ready":
                        await asyncio.sleep(delay_s)
                        log.ready_sent_at = time.monotonic()
                        released.set()
                    await client.send(message)
                await client.close()

            async def up() -> None:
                async for message in client:
                    if isinstance(message, bytes):
                        log.first_audio_at = log.first_audio_at or time.monotonic()
                        if not released.is_set():
                            log.dropped_bytes += len(message)
                            continue
                        log.forwarded_bytes += len(message)
                    await server.send(message)

            await asyncio.gather(down(), up(), return_exceptions=True)

    async with serve(handler, "127.0.0.1", 0) as relay:
        port = relay.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws/transcribe", log


class LiveSpeaker:
    """A microphone stand-in: audio exists only from when capture starts, at real-time pace."""

    sample_rate = 16_000
    channels = 1

    def __init__(self, pcm: bytes) -> None:
        self.pcm = pcm
        self.started_at: float | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started_at = time.monotonic()
        for index, offset in enumerate(range(0, len(self.pcm), BYTES_PER_CHUNK)):
            yield self.pcm[offset : offset + BYTES_PER_CHUNK]
            await asyncio.sleep(max(0.0, self.started_at + (index + 1) * 0.1 - time.monotonic()))


async def test_the_client_waits_for_ready_so_a_slow_server_loses_no_audio(
    keyed: tuple[RunningServer, str], tmp_path: Path
) -> None:
    server, _ = keyed
    _, key = Admin(server).create_key()
    pcm = SPEECH[: 20 * BYTES_PER_CHUNK]
    speaker = LiveSpeaker(pcm)
    async with delaying_relay(ws_url(server), delay_s=2.0) as (relay_url, log):
        connecting_at = time.monotonic()
        summary = await StreamingTranscriber.managed(relay_url, key, speaker).run()
    assert log.ready_sent_at is not None and log.ready_sent_at - connecting_at >= 2.0
    assert speaker.started_at is not None and speaker.started_at >= log.ready_sent_at
    assert log.dropped_bytes == 0 and log.forwarded_bytes == len(pcm)
    assert log.messages[-1] == {"type": "session_end", "seconds_used": 2.0}
    assert summary.seconds_used == 2.0 and summary.text


async def test_a_second_session_over_the_keys_limit_is_rate_limited(keyed: tuple[RunningServer, str]) -> None:
    server, _ = keyed
    _, key = Admin(server).create_key(max_sessions=1)
    async with websockets.connect(ws_url(server)) as first:
        await first.send(auth(key))
        assert json.loads(await first.recv())["type"] == "ready"
        async with websockets.connect(ws_url(server)) as second:
            await second.send(auth(key))
            messages, code = await until_closed(second)
    assert [(m["type"], m["code"]) for m in messages] == [("error", "RATE_LIMITED")] and code == 1008
