"""More work than the models can carry, through a real server.

The excess is refused in each protocol's own shape with a retry hint, the admitted sessions stay real-time,
and every session is billed once and on time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio, float_to_pcm16
from earshot.engines.provider_io import wav_bytes
from tests.conftest import ADMIN_TOKEN, Admin, RunningServer, start_server, stop_server, usage_records
from tests.e2e.catalogs import write_catalog
from tests.e2e.flac import flac_of
from tests.e2e.realtime_client import chunks, pcm24, silence, speech
from tests.e2e.session_end import the_record, until_closed

CHUNK_MS = 100
FLUSH_TIMEOUT_S = 2.0
QUEUE_WAIT_S = 1.0
MAX_AUDIO_S = 600
HEADER_TIMEOUT_S = 1.0
BODY_IDLE_TIMEOUT_S = 1.0
UPLOAD_DEADLINE_S = 3.0
CATALOG = {
    "narrow": {
        "engine": "pocketsphinx",
        "max_live_sessions": 2,
        "max_concurrency": 1,
        "max_queue": 1,
        "max_queue_wait_s": QUEUE_WAIT_S,
    },
    "first": {"engine": "pocketsphinx", "max_live_sessions": 1, "fallbacks": ["second"]},
    "second": {"engine": "pocketsphinx", "max_live_sessions": 1},
    "quiet": {"engine": "null", "max_live_sessions": 40},
    "roomy": {"engine": "pocketsphinx", "max_live_sessions": 8},
}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str]]:
    """A server whose models have small, known capacities, and its database URL."""
    tmp = tmp_path_factory.mktemp("overload")
    server = start_server(tmp, overload_env(tmp))
    try:
        yield server, overload_env(tmp)["EARSHOT_DATABASE_URL"]
    finally:
        stop_server(server)


def overload_env(tmp: Path) -> dict[str, str]:
    return {
        "EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN,
        "EARSHOT_CONFIG": str(write_catalog(tmp / "catalog.yaml", CATALOG, default_model="narrow")),
        "EARSHOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'earshot.db'}",
        "EARSHOT_FLUSH_TIMEOUT_S": str(FLUSH_TIMEOUT_S),
        "EARSHOT_MAX_AUDIO_SECONDS": str(MAX_AUDIO_S),
        "EARSHOT_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "EARSHOT_BODY_IDLE_TIMEOUT_S": str(BODY_IDLE_TIMEOUT_S),
        "EARSHOT_UPLOAD_DEADLINE_S": str(UPLOAD_DEADLINE_S),
    }


def ws_base(server: RunningServer) -> str:
    return server.base_url.replace("http://", "ws://")


async def realtime(server: RunningServer, key: str, model: str) -> tuple[ClientConnection, dict[str, Any]]:
    """A /v1/realtime connection and the first event the server sent on it."""
    ws = await websockets.connect(
        f"{ws_base(server)}/v1/realtime?intent=transcription&model={model}",
        additional_headers={"Authorization": f"Bearer {key}"},
    )
    return ws, json.loads(await ws.recv())


def append(payload: str) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": payload})


# One turn: speech, then a second of silence for the server VAD to end it on.
TURN = chunks(
    pcm24(np.concatenate([speech("pocketsphinx-testdata/goforward.wav"), silence(1.0)])), 48_000, 100
)


async def speak_one_turn(ws: ClientConnection) -> tuple[int, float]:
    """Send one turn at real-time pace, reading events meanwhile; the ms sent and how long after the last
    audio the turn's transcript arrived (negative: before it)."""
    completed_at: list[float] = []

    async def read() -> None:
        async for raw in ws:
            event = json.loads(raw)
            if event["type"] == "conversation.item.input_audio_transcription.completed":
                completed_at.append(time.monotonic())
                return

    reader = asyncio.create_task(read())
    started = time.monotonic()
    for index, payload in enumerate(TURN):
        await ws.send(append(payload))
        await asyncio.sleep(max(0.0, started + (index + 1) * CHUNK_MS / 1000 - time.monotonic()))
    sent_at = time.monotonic()
    await asyncio.wait_for(reader, 10)
    return len(TURN) * CHUNK_MS, completed_at[0] - sent_at


async def open_sessions(
    server: RunningServer, model: str, count: int
) -> tuple[list[tuple[str, str]], list[tuple[ClientConnection, dict[str, Any]]]]:
    """`count` new keys, and a /v1/realtime connection on `model` for each, with its first event."""
    keys = [Admin(server).create_key() for _ in range(count)]
    return keys, [await realtime(server, key, model) for _, key in keys]


def record_of(url: str, key_id: str) -> list[Any]:
    return [record for record in usage_records(url) if record.key_id == key_id]


async def test_past_the_live_capacity_sessions_are_refused_and_the_admitted_stay_real_time(
    loaded: tuple[RunningServer, str],
) -> None:
    server, url = loaded
    admin = Admin(server)
    keys, connections = await open_sessions(server, "narrow", 4)
    admitted = [ws for ws, first in connections if first["type"] == "session.created"]
    refused = [(ws, first) for ws, first in connections if first["type"] == "error"]
    assert len(admitted) == 2 and len(refused) == 2
    for ws, first in refused:
        assert first["error"]["code"] == "server_busy" and "try again in" in first["error"]["message"]
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1013

    # The other protocols are refused in their own shapes while the model is full.
    _, bystander = admin.create_key()
    with pytest.raises(websockets.InvalidStatus) as deepgram:
        await websockets.connect(
            f"{ws_base(server)}/v1/listen?model=narrow&encoding=linear16&sample_rate=16000",
            additional_headers={"Authorization": f"Token {bystander}"},
        )
    assert deepgram.value.response.status_code == 429
    assert int(deepgram.value.response.headers["retry-after"]) >= 1
    assert json.loads(deepgram.value.response.body)["err_code"] == "TOO_MANY_REQUESTS"
    managed = await websockets.connect(f"{ws_base(server)}/ws/transcribe")
    await managed.send(json.dumps({"type": "auth", "token": bystander, "config": {"model": "narrow"}}))
    managed_events, managed_code = await until_closed(managed)
    assert [event.get("code") for event in managed_events] == ["SERVER_BUSY"] and managed_code == 1013

    metrics = (await asyncio.to_thread(httpx.get, f"{server.base_url}/metrics")).text
    assert 'earshot_model_live_capacity{model="narrow"} 2.0' in metrics
    assert 'earshot_model_live_sessions{model="narrow"} 2.0' in metrics

    turns = await asyncio.gather(*(speak_one_turn(ws) for ws in admitted))
    for _, late_s in turns:
        assert late_s <= 1.0, f"the transcript came {late_s:.2f} s after the turn's audio"
    closed_at = time.monotonic()
    for ws in admitted:
        await ws.close()
    admitted_keys = [
        key_id for (key_id, _), (_, first) in zip(keys, connections, strict=True) if first["type"] != "error"
    ]
    for key_id, (sent_ms, _) in zip(admitted_keys, turns, strict=True):
        record = await the_record(url, key_id, timeout_s=FLUSH_TIMEOUT_S + 1)
        assert record.outcome == "ok" and abs(record.audio_ms - sent_ms) <= CHUNK_MS
    assert time.monotonic() - closed_at <= FLUSH_TIMEOUT_S + 1
    for key_id, _ in keys:
        records = await asyncio.to_thread(record_of, url, key_id)
        assert len(records) == 1, "one record per connection, refused ones included"


async def test_a_full_model_overflows_to_its_fallback_and_then_refuses(
    loaded: tuple[RunningServer, str],
) -> None:
    server, url = loaded
    keys, opened = await open_sessions(server, "first", 3)
    assert [first["type"] for _, first in opened] == ["session.created", "session.created", "error"]
    for ws, _ in opened[:2]:
        for payload in TURN[:5]:
            await ws.send(append(payload))
        await ws.close()
    models = [(await the_record(url, key_id)).model for key_id, _ in keys[:2]]
    assert models == ["first", "second"]


def test_uploads_over_capacity_get_503_with_retry_after_within_the_queue_wait(
    loaded: tuple[RunningServer, str],
) -> None:
    server, _ = loaded
    _, key = Admin(server).create_key()
    long_speech = np.tile(speech("pocketsphinx-testdata/goforward.wav"), 6)
    wav = wav_bytes(Audio(long_speech))

    def timed_upload() -> tuple[int, str | None, float]:
        started = time.monotonic()
        answered = upload(server, key, "long.wav", wav, "audio/wav")
        return answered.status_code, answered.headers.get("retry-after"), time.monotonic() - started

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: timed_upload(), range(4)))
    served = [answer for answer in answers if answer[0] == 200]
    busy = [answer for answer in answers if answer[0] == 503]
    assert served and busy and len(served) + len(busy) == 4, answers
    for _, retry_after, took_s in busy:
        assert retry_after is not None and int(retry_after) >= 1
        assert took_s <= QUEUE_WAIT_S + 1.0


def upload(server: RunningServer, key: str, name: str, data: bytes, content_type: str) -> httpx.Response:
    """POST /v1/audio/transcriptions of one file to the narrow model."""
    return httpx.post(
        f"{server.base_url}/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {key}"},
        files={"file": (name, data, content_type)},
        data={"model": "narrow"},
        timeout=120,
    )


def test_an_hour_of_compressed_silence_is_refused_before_it_is_decoded(
    loaded: tuple[RunningServer, str],
) -> None:
    server, _ = loaded
    _, key = Admin(server).create_key()
    flac = hour_of_silence_flac()
    assert len(flac) < 1_000_000
    process = psutil.Process(server.process.pid)
    before_mb = process.memory_info().rss / 2**20
    answered = upload(server, key, "silence.flac", flac, "audio/flac")
    assert answered.status_code == 400 and answered.json()["error"]["code"] == "audio_too_long"
    assert process.memory_info().rss / 2**20 - before_mb < 50


def hour_of_silence_flac() -> bytes:
    return flac_of(np.zeros(ENGINE_RATE_HZ, dtype=np.int16) for _ in range(3600))


async def test_a_revoked_key_is_cut_off_within_a_second_while_the_model_is_full(
    loaded: tuple[RunningServer, str],
) -> None:
    server, url = loaded
    admin = Admin(server)
    (victim_id, victim), (_, other) = admin.create_key(), admin.create_key()
    victim_ws, _ = await realtime(server, victim, "narrow")
    other_ws, _ = await realtime(server, other, "narrow")

    async def keep_talking() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            for payload in TURN * 3:
                await victim_ws.send(append(payload))
                await asyncio.sleep(CHUNK_MS / 1000)

    talking = asyncio.create_task(keep_talking())
    other_turn = asyncio.create_task(speak_one_turn(other_ws))
    await asyncio.sleep(2.0)
    revoked_at = time.monotonic()
    await asyncio.to_thread(admin.revoke, victim_id)
    events, code = await until_closed(victim_ws)
    assert time.monotonic() - revoked_at <= 1.0
    assert events[-1]["error"]["code"] == "invalid_api_key" and code == 1008
    await talking
    await other_turn
    await other_ws.close()
    assert (await the_record(url, victim_id)).outcome == "revoked"


def test_sigterm_during_20_live_sessions_writes_every_record_and_exits_within_the_grace(
    tmp_path: Path,
) -> None:
    grace_s = 5.0
    env = {**overload_env(tmp_path), "EARSHOT_SHUTDOWN_GRACE_S": str(grace_s)}
    server = start_server(tmp_path, env)
    url = env["EARSHOT_DATABASE_URL"]
    admin = Admin(server)
    keys = [admin.create_key() for _ in range(20)]
    payload = base64.b64encode(b"\0" * 4800).decode()  # 100 ms at 24 kHz
    sent_ms: dict[str, int] = {}
    closed: dict[str, int] = {}

    async def talk(key_id: str, key: str, streaming: asyncio.Event) -> None:
        ws, first = await realtime(server, key, "quiet")
        assert first["type"] == "session.created"
        sent_ms[key_id] = 0
        streaming.set()
        try:
            while True:
                await ws.send(append(payload))
                sent_ms[key_id] += CHUNK_MS
                await asyncio.sleep(CHUNK_MS / 1000)
        except websockets.ConnectionClosed as e:
            closed[key_id] = e.rcvd.code if e.rcvd else 1006

    async def run() -> float:
        ready = [asyncio.Event() for _ in keys]
        talking = [
            asyncio.create_task(talk(key_id, key, event))
            for (key_id, key), event in zip(keys, ready, strict=True)
        ]
        await asyncio.gather(*(event.wait() for event in ready))
        await asyncio.sleep(1.0)
        terminated_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        await asyncio.gather(*talking)
        await asyncio.to_thread(server.process.wait, grace_s + 5)
        return time.monotonic() - terminated_at

    try:
        took_s = asyncio.run(run())
    finally:
        stop_server(server)
    assert took_s <= grace_s + 1.0
    assert set(closed) == {key_id for key_id, _ in keys}
    records = usage_records(url)
    for key_id, _ in keys:
        mine = [record for record in records if record.key_id == key_id]
        assert len(mine) == 1 and mine[0].outcome is not None, mine
        # Audio sent after the server stopped reading (while its goodbye was on the way) is not billed.
        assert 0 <= sent_ms[key_id] - mine[0].audio_ms <= 5 * CHUNK_MS


async def test_connections_that_never_finish_their_headers_are_closed_after_the_header_timeout(
    loaded: tuple[RunningServer, str],
) -> None:
    server, _ = loaded
    host, port = server.base_url.removeprefix("http://").split(":")
    opened = [await asyncio.open_connection(host, int(port)) for _ in range(200)]
    for _, writer in opened:
        writer.write(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: earshot\r\nX-Slow: ")
    started = time.monotonic()

    async def drip_until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        # A byte of header every 0.3 s: alive, but never done.
        while not reader.at_eof() and time.monotonic() - started < HEADER_TIMEOUT_S + 5:
            with contextlib.suppress(ConnectionError):
                writer.write(b"a")
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(reader.read(), 0.3)
        return b""

    answers = await asyncio.gather(*(drip_until_closed(reader, writer) for reader, writer in opened))
    took_s = time.monotonic() - started
    assert sum(answer.startswith(b"HTTP/1.1 408") for answer in answers) == len(opened)
    assert took_s <= HEADER_TIMEOUT_S + 2
    for _, writer in opened:
        writer.close()
    health = await asyncio.to_thread(httpx.get, f"{server.base_url}/healthz")
    assert health.status_code == 200


def test_a_body_dripped_slowly_is_cut_off_at_the_deadline_and_frees_its_session_slot(
    loaded: tuple[RunningServer, str],
) -> None:
    server, _ = loaded
    _, key = Admin(server).create_key(max_sessions=1)
    host, port = server.base_url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(
            b"POST /v1/listen HTTP/1.1\r\nHost: earshot\r\nContent-Type: audio/wav\r\n"
            + f"Authorization: Token {key}\r\nContent-Length: 100000\r\n\r\n".encode()
        )
        answer = b""
        # Ten bytes every half second: never idle for the idle timeout, but far from done by the deadline.
        while not answer and time.monotonic() - started < UPLOAD_DEADLINE_S + 5:
            with contextlib.suppress(OSError):
                slow.sendall(b"\0" * 10)
            slow.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                answer = slow.recv(4096)
        answer += rest_of_response(slow)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"REQUEST_TIMEOUT" in answer
    assert time.monotonic() - started <= UPLOAD_DEADLINE_S + 1.5
    wav = wav_bytes(Audio(speech("pocketsphinx-testdata/goforward.wav")))
    after = httpx.post(
        f"{server.base_url}/v1/listen?model=narrow",
        headers={"Authorization": f"Token {key}", "Content-Type": "audio/wav"},
        content=wav,
        timeout=60,
    )
    assert after.status_code == 200, "the slow request's session slot was given back"


def test_a_body_that_stalls_gets_408_after_the_idle_timeout(loaded: tuple[RunningServer, str]) -> None:
    server, _ = loaded
    _, key = Admin(server).create_key()
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as stalled:
        stalled.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: earshot\r\n"
            + f"Authorization: Bearer {key}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 5000\r\n\r\n--x\r\n"
        )
        started = time.monotonic()
        answer = stalled.recv(4096)
        answered_at = time.monotonic()
        answer += rest_of_response(stalled)
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer[:300]
    assert BODY_IDLE_TIMEOUT_S - 0.2 <= answered_at - started <= BODY_IDLE_TIMEOUT_S + 1.0


def rest_of_response(sock: socket.socket) -> bytes:
    """What the server still sends on a connection, until it closes it or pauses for a second."""
    sock.settimeout(1.0)
    rest = b""
    with contextlib.suppress(TimeoutError, OSError):
        while chunk := sock.recv(4096):
            rest += chunk
    return rest


async def test_300_sessions_leave_the_engine_workers_where_they_started(
    loaded: tuple[RunningServer, str],
) -> None:
    server, _ = loaded
    _, key = Admin(server).create_key()
    workers = psutil.Process(server.process.pid).children(recursive=True)
    # Interim results keep a decoder per stream in a worker: the path whose memory grew by gigabytes.
    url = f"{ws_base(server)}/v1/listen?model=roomy&encoding=linear16&sample_rate=16000&interim_results=true"
    # Just past the half second after which a stream makes its own decoder.
    audio = float_to_pcm16(speech("pocketsphinx-testdata/goforward.wav")[: round(0.6 * ENGINE_RATE_HZ)])
    gate = asyncio.Semaphore(8)

    async def one_session(index: int) -> None:
        # Sessions end every way: CloseStream, a plain close mid-stream, and a dropped connection.
        async with gate, websockets.connect(url, additional_headers={"Authorization": f"Token {key}"}) as ws:
            for start in range(0, len(audio), 3200):
                await ws.send(audio[start : start + 3200])
            if index % 3 == 1:
                return
            if index % 3 == 2:
                ws.transport.abort()
                return
            await ws.send(json.dumps({"type": "CloseStream"}))
            async for raw in ws:
                if json.loads(raw)["type"] == "Metadata":
                    break

    def workers_rss_mb() -> float:
        return sum(worker.memory_info().rss for worker in workers) / 2**20

    await asyncio.gather(*(one_session(index) for index in range(16)))  # every worker has made its decoders
    started_mb = workers_rss_mb()
    await asyncio.gather(*(one_session(index) for index in range(300)))
    await asyncio.sleep(1.0)  # the last sessions' engine streams are stopped in the background
    ended_mb = workers_rss_mb()
    assert ended_mb <= started_mb * 1.2, f"engine workers grew from {started_mb:.0f} MB to {ended_mb:.0f} MB"


async def test_hostile_json_gets_each_protocols_error_and_the_session_goes_on(
    loaded: tuple[RunningServer, str],
) -> None:
    server, _ = loaded
    _, key = Admin(server).create_key()
    hostile = [
        '{"type": "session.update", "session": {"audio": ' + "7" * 5000 + "}}",
        "[" * 100_000 + "]" * 100_000,
        '{"type": "KeepAlive", "x": NaN}',
        json.dumps({"type": "x" * 1_000_000}),
    ]
    realtime_ws, _ = await realtime(server, key, "narrow")
    for text in hostile:
        await realtime_ws.send(text)
        answer = json.loads(await realtime_ws.recv())
        assert answer["type"] == "error", answer
    await realtime_ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
    assert json.loads(await realtime_ws.recv())["type"] == "input_audio_buffer.cleared"
    await realtime_ws.close()

    deepgram_ws = await websockets.connect(
        f"{ws_base(server)}/v1/listen?model=narrow&encoding=linear16&sample_rate=16000",
        additional_headers={"Authorization": f"Token {key}"},
    )
    for text in hostile:
        await deepgram_ws.send(text)
        answer = json.loads(await deepgram_ws.recv())
        assert (answer["type"], answer.get("variant")) == ("Error", "SchemaError"), answer
    await deepgram_ws.send(json.dumps({"type": "CloseStream"}))
    assert json.loads(await deepgram_ws.recv())["type"] == "Metadata"

    managed_ws = await websockets.connect(f"{ws_base(server)}/ws/transcribe")
    await managed_ws.send(json.dumps({"type": "auth", "token": key, "config": {"model": "narrow"}}))
    assert json.loads(await managed_ws.recv())["type"] == "ready"
    for text in hostile:
        await managed_ws.send(text)
        answer = json.loads(await managed_ws.recv())
        assert (answer["type"], answer["code"]) == ("error", "BAD_REQUEST"), answer
    await managed_ws.send(json.dumps({"type": "close"}))
    events, _ = await until_closed(managed_ws)
    assert events[-1]["type"] == "session_end"


async def test_a_message_too_big_closes_with_1009_and_leaves_nothing_odd_in_the_log(
    loaded: tuple[RunningServer, str],
) -> None:
    server, _ = loaded
    _, key = Admin(server).create_key()
    before = len(server.log_text())
    huge = "x" * (5 * 1024 * 1024)
    realtime_ws, _ = await realtime(server, key, "narrow")
    deepgram_ws = await websockets.connect(
        f"{ws_base(server)}/v1/listen?model=narrow&encoding=linear16&sample_rate=16000",
        additional_headers={"Authorization": f"Token {key}"},
    )
    for ws in (realtime_ws, deepgram_ws):
        for payload in TURN[:5]:
            await ws.send(append(payload) if ws is realtime_ws else base64.b64decode(payload))
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(huge)
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await ws.recv()
        assert ws.close_code == 1009
    await asyncio.sleep(1.0)
    logged = server.log_text()[before:]
    for sign in ("Task was destroyed", "Exception ignored", "Traceback", "was never awaited"):
        assert sign not in logged, logged[-3000:]
