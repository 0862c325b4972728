"""Every way a live session can end leaves exactly one usage record, with the right outcome and seconds."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import (
    ADMIN_TOKEN,
    BACKENDS,
    Admin,
    RunningServer,
    fresh_database,
    start_server,
    stop_server,
    usage_records,
)
from tests.e2e.realtime_client import chunks, pcm24, silence, speech
from tests.e2e.session_end import the_record, until_closed

CHUNK_MS = 100
IDLE_TIMEOUT_S = 1.5
QUIET_S = 3 * IDLE_TIMEOUT_S
PING_INTERVAL_S = 1.0
PING_TIMEOUT_S = 1.0
GOFORWARD = "pocketsphinx-testdata/goforward.wav"
# Real speech, looped, as 100 ms appends of 24 kHz PCM16: every append is exactly 100 ms of metered audio.
SPEECH = chunks(pcm24(np.tile(speech("pocketsphinx-testdata/goforward.wav"), 4)), 48_000, CHUNK_MS)


@pytest.fixture(scope="module", params=BACKENDS)
def keyed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, str]]:
    """A server with an admin token, a short keepalive and quick pings, and its database URL."""
    tmp = tmp_path_factory.mktemp(f"realtime-{request.param}")
    with fresh_database(request.param, tmp) as url:
        env = {
            "EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN,
            "EARSHOT_DATABASE_URL": url,
            "EARSHOT_KEEPALIVE_S": str(IDLE_TIMEOUT_S),
            "EARSHOT_WS_PING_INTERVAL_S": str(PING_INTERVAL_S),
            "EARSHOT_WS_PING_TIMEOUT_S": str(PING_TIMEOUT_S),
        }
        server = start_server(tmp, env)
        try:
            yield server, url
        finally:
            stop_server(server)


def ws_url(server: RunningServer) -> str:
    return server.base_url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"


async def connect(server: RunningServer, key: str) -> ClientConnection:
    ws = await websockets.connect(ws_url(server), additional_headers={"Authorization": f"Bearer {key}"})
    assert json.loads(await ws.recv())["type"] == "session.created"
    return ws


async def stream(ws: ClientConnection, seconds: float) -> int:
    """Append `seconds` of speech at real-time pace; the ms of audio sent."""
    count = round(seconds * 1000 / CHUNK_MS)
    started = time.monotonic()
    for index in range(count):
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": SPEECH[index % len(SPEECH)]}))
        await asyncio.sleep(max(0.0, started + (index + 1) * CHUNK_MS / 1000 - time.monotonic()))
    return count * CHUNK_MS


def errors(events: list[dict[str, Any]]) -> list[str]:
    return [event["error"]["code"] for event in events if event["type"] == "error"]


async def test_a_normal_close_is_ok_and_meters_every_appended_second(
    keyed: tuple[RunningServer, str],
) -> None:
    server, url = keyed
    key_id, key = Admin(server).create_key()
    ws = await connect(server, key)
    sent_ms = await stream(ws, 1.5)
    await asyncio.sleep(0.3)
    await ws.close()
    record = await the_record(url, key_id)
    assert (record.outcome, record.audio_ms, record.route) == ("ok", sent_ms, "/v1/realtime")
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{server.base_url}/metrics")).text
    assert 'earshot_live_sessions_total{outcome="ok",route="/v1/realtime"}' in metrics


async def test_a_client_vanishing_mid_turn_leaves_one_client_closed_record(
    keyed: tuple[RunningServer, str],
) -> None:
    server, url = keyed
    key_id, key = Admin(server).create_key()
    ws = await connect(server, key)
    sent_ms = await stream(ws, 1.2)
    await asyncio.sleep(0.3)
    ws.transport.abort()
    record = await the_record(url, key_id)
    assert (record.outcome, record.audio_ms) == ("client_closed", sent_ms)


async def test_a_quiet_session_outlives_the_keepalive_and_still_transcribes(
    keyed: tuple[RunningServer, str],
) -> None:
    # OpenAI keeps a quiet session open (client-side VAD, push-to-talk), and its clients take any error as
    # fatal: here too nothing but the maximum duration ends it, whatever the keepalive (Deepgram's rule).
    server, url = keyed
    key_id, key = Admin(server).create_key()
    ws = await connect(server, key)
    sent_ms = await stream(ws, 0.5)
    quiet = asyncio.create_task(ws.recv())
    await asyncio.sleep(QUIET_S)
    assert not quiet.done(), "nothing is sent to a quiet session"
    quiet.cancel()
    turn = chunks(pcm24(np.concatenate([speech(GOFORWARD), silence(1.5)])), 48_000, CHUNK_MS)
    started = time.monotonic()
    for index, payload in enumerate(turn):
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": payload}))
        await asyncio.sleep(max(0.0, started + (index + 1) * CHUNK_MS / 1000 - time.monotonic()))
    sent_ms += len(turn) * CHUNK_MS
    completed: list[str] = []
    while not completed:
        event = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert event["type"] != "error", event
        if event["type"] == "conversation.item.input_audio_transcription.completed":
            completed.append(event["transcript"])
    assert "forward" in completed[0].lower()
    await ws.close()
    record = await the_record(url, key_id)
    assert record.outcome == "ok" and abs(record.audio_ms - sent_ms) <= CHUNK_MS


async def test_a_peer_that_stops_answering_pings_is_dropped(keyed: tuple[RunningServer, str]) -> None:
    # A client whose machine vanished without a FIN: it holds the connection open but never answers.
    server, url = keyed
    key_id, key = Admin(server).create_key()
    port = int(server.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            "GET /v1/realtime?intent=transcription HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {key}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    record = await the_record(url, key_id, timeout_s=PING_INTERVAL_S + PING_TIMEOUT_S + 10)
    assert (record.outcome, record.audio_ms) == ("client_closed", 0)
    opcodes, close_code = server_frames(await asyncio.wait_for(reader.read(), 10))
    writer.close()
    assert opcodes[0] == TEXT_OPCODE and PING_OPCODE in opcodes, "session.created, then a ping"
    assert close_code == 1011, "closed for the unanswered ping"


TEXT_OPCODE, CLOSE_OPCODE, PING_OPCODE = 0x1, 0x8, 0x9


def server_frames(data: bytes) -> tuple[list[int], int | None]:
    """The opcodes of the (unmasked) frames a server sent, and the code of its close frame."""
    opcodes: list[int] = []
    close_code = None
    at = 0
    while at + 2 <= len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if length == 126:
            length, at = int.from_bytes(data[at : at + 2], "big"), at + 2
        elif length == 127:
            length, at = int.from_bytes(data[at : at + 8], "big"), at + 8
        if opcode == CLOSE_OPCODE and length >= 2:
            close_code = int.from_bytes(data[at : at + 2], "big")
        opcodes.append(opcode)
        at += length
    return opcodes, close_code


async def test_running_out_of_credit_ends_the_session_with_insufficient_quota(
    keyed: tuple[RunningServer, str],
) -> None:
    server, url = keyed
    admin = Admin(server)
    key_id, key = admin.create_key(credits_seconds=2)
    ws = await connect(server, key)
    closing = asyncio.create_task(until_closed(ws, timeout_s=15))
    with pytest.raises(websockets.ConnectionClosed):
        await stream(ws, 5)
    events, code = await closing
    assert errors(events) == ["insufficient_quota"] and code == 1008
    record = await the_record(url, key_id)
    assert record.outcome == "insufficient_credits"
    assert 2000 < record.audio_ms <= 2500 and record.debited_ms == 2000
    assert admin.key(key_id)["credits_seconds"] == 0


async def test_a_revoked_key_is_cut_off_within_a_second(keyed: tuple[RunningServer, str]) -> None:
    server, url = keyed
    admin = Admin(server)
    key_id, key = admin.create_key()
    ws = await connect(server, key)
    sent_ms = await stream(ws, 1.0)
    await asyncio.sleep(0.2)
    revoked_at = time.monotonic()
    admin.revoke(key_id)
    events, code = await until_closed(ws)
    assert time.monotonic() - revoked_at <= 1.0
    assert errors(events) == ["invalid_api_key"] and code == 1008
    record = await the_record(url, key_id)
    assert (record.outcome, record.audio_ms) == ("revoked", sent_ms)


async def test_a_session_ends_at_the_maximum_duration(keyed: tuple[RunningServer, str]) -> None:
    server, url = keyed
    admin = Admin(server)
    assert admin.http.put("/admin/settings", json={"max_session_s": 1.0}).status_code == 200
    try:
        await asyncio.sleep(0.7)
        key_id, key = admin.create_key()
        ws = await connect(server, key)
        closing = asyncio.create_task(until_closed(ws))
        with pytest.raises(websockets.ConnectionClosed):
            await stream(ws, 3)
        events, code = await closing
    finally:
        admin.http.delete("/admin/settings/max_session_s")
    assert errors(events) == ["session_expired"] and code == 1000
    record = await the_record(url, key_id)
    assert record.outcome == "max_duration" and 800 <= record.audio_ms <= 1500


async def test_refused_connections_get_an_error_event_and_1008(keyed: tuple[RunningServer, str]) -> None:
    server, url = keyed
    _, query_key = Admin(server).create_key()
    for headers in ({}, {"Authorization": "Bearer es_000000000000_wrong"}):
        async with websockets.connect(ws_url(server), additional_headers=headers) as ws:
            events, code = await until_closed(ws)
        assert errors(events) == ["invalid_api_key"] and code == 1008
    async with websockets.connect(f"{ws_url(server)}&api_key={query_key}") as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
    assert query_key not in server.log_text(), "a key sent in the query string is not logged"
    key_id, key = Admin(server).create_key()
    subprotocols = ["realtime", f"openai-insecure-api-key.{key}"]
    async with websockets.connect(ws_url(server), subprotocols=subprotocols) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "realtime"
        assert json.loads(await ws.recv())["type"] == "session.created"
    assert (await the_record(url, key_id)).outcome == "ok"


@pytest.mark.parametrize("backend", BACKENDS)
def test_server_shutdown_leaves_one_shutdown_record(backend: str, tmp_path: Path) -> None:
    async def stream_until_shutdown(server: RunningServer, key: str) -> int:
        ws = await connect(server, key)
        sent_ms = await stream(ws, 1.0)
        await asyncio.sleep(0.3)
        server.process.terminate()
        events, code = await until_closed(ws)
        assert errors(events) == ["server_shutting_down"]
        completed = [
            e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"
        ]
        assert completed and completed[-1]["transcript"], "the open turn is transcribed before the close"
        assert code == 1012, "the client is told the server is restarting"
        return sent_ms

    with fresh_database(backend, tmp_path) as url:
        server = start_server(tmp_path, {"EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN, "EARSHOT_DATABASE_URL": url})
        try:
            key_id, key = Admin(server).create_key()
            sent_ms = asyncio.run(stream_until_shutdown(server, key))
            server.process.wait(timeout=20)
        finally:
            stop_server(server)
        records = [record for record in usage_records(url) if record.key_id == key_id]
        assert [(r.outcome, r.audio_ms) for r in records] == [("shutdown", sent_ms)]
        assert "Traceback" not in server.log_text()
