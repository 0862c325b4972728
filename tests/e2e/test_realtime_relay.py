"""/v1/realtime sessions on an OpenAI-hosted model are relayed to the provider's Realtime socket (the fake).

The official openai SDK (GA) and a plain websocket (beta) talk to earshot; earshot talks to the fake with its
own provider key. Usage is metered from the appended audio; a revoked key is cut off mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from tests.conftest import Admin
from tests.e2e.provider_server import TRANSCRIPT, ProviderSetup, provider_setup, reset
from tests.e2e.realtime_client import EventLog, chunks, collect, commit_manually, pcm24, silence, speech
from tests.e2e.session_end import the_record, until_closed
from tests.e2e.test_realtime_faults import errors
from tests.fakes.openai import OPENAI_KEY, SECRET_MARKER

GOFORWARD = "pocketsphinx-testdata/goforward.wav"
CHUNK_MS = 100


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderSetup]:
    with provider_setup(tmp_path_factory.mktemp("relay")) as running:
        yield running


@pytest.fixture
def fresh(setup: ProviderSetup) -> ProviderSetup:
    reset(setup.fake)
    return setup


def ws_url(setup: ProviderSetup, model: str | None = None) -> str:
    url = setup.server.base_url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    return f"{url}&model={model}" if model else url


def appends(seconds_of_silence_after: float = 0.0) -> list[str]:
    audio = np.concatenate([speech(GOFORWARD), silence(seconds_of_silence_after)])
    return chunks(pcm24(audio), 48_000, CHUNK_MS)


def no_secrets(text: str, setup: ProviderSetup) -> None:
    for secret in (OPENAI_KEY, SECRET_MARKER, setup.fake_server.base_url, str(setup.fake_server.port)):
        assert secret not in text


def sdk(setup: ProviderSetup, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{setup.server.base_url}/v1", api_key=key, max_retries=0)


async def plain_socket(setup: ProviderSetup, key: str) -> websockets.ClientConnection:
    return await websockets.connect(ws_url(setup), additional_headers={"Authorization": f"Bearer {key}"})


async def until_completed(connection: AsyncRealtimeConnection, seconds: float) -> EventLog:
    """The session's events up to its first completed transcript."""
    log = EventLog()
    await collect(connection, log, until_completed=1, timeout_s=seconds)
    return log


async def committed_turn(
    setup: ProviderSetup, key: str, model: str, input_settings: dict[str, Any] | None = None
) -> EventLog:
    """An SDK session on `model`, turn detection off: the clip appended and committed, to its transcript."""
    query = {"intent": "transcription", "model": model}
    async with sdk(setup, key).realtime.connect(extra_query=query) as connection:
        assert (await connection.recv()).type == "session.created"
        await commit_manually(connection, appends(), **(input_settings or {}))
        return await until_completed(connection, 15)


async def test_sdk_session_is_relayed_with_server_vad_and_metered(fresh: ProviderSetup) -> None:
    key_id, key = Admin(fresh.server).create_key()
    payloads = appends(seconds_of_silence_after=1.0)
    async with sdk(fresh, key).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        created = await connection.recv()
        assert created.type == "session.created"
        for payload in payloads:
            await connection.input_audio_buffer.append(audio=payload)
        log = await until_completed(connection, 15)
    every_event = json.dumps([created.to_dict(), *(event for _, event in log.events)])
    assert log.completed[0]["transcript"] == TRANSCRIPT
    assert "".join(log.deltas(log.completed[0]["item_id"])) == TRANSCRIPT
    assert log.of("input_audio_buffer.speech_started") and log.of("conversation.item.added")
    assert created.to_dict()["session"]["audio"]["input"]["transcription"]["model"] == "relayed"
    assert "gpt-4o-transcribe" not in every_event, "the provider's model name stays hidden"
    no_secrets(every_event, fresh)
    upstream = fresh.fake.sockets[-1]
    assert upstream.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert key not in fresh.fake.all_headers_text() and key not in json.dumps(upstream.events)
    update = upstream.of("session.update")[0]["session"]["audio"]["input"]
    assert update["transcription"]["model"] == "gpt-4o-transcribe"
    assert update["turn_detection"]["type"] == "server_vad"
    record = await the_record(fresh.database_url, key_id)
    assert (record.outcome, record.model) == ("ok", "relayed")
    assert record.audio_ms == pytest.approx(len(payloads) * CHUNK_MS, abs=CHUNK_MS)


async def test_a_beta_client_is_translated_for_a_ga_provider(fresh: ProviderSetup) -> None:
    _, key = Admin(fresh.server).create_key()
    headers = {"Authorization": f"Bearer {key}", "OpenAI-Beta": "realtime=v1"}
    received: list[dict[str, Any]] = []
    async with websockets.connect(ws_url(fresh), additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["type"] == "transcription_session.created"
        update = {"type": "transcription_session.update", "session": {"turn_detection": None}}
        await ws.send(json.dumps(update))
        updated = json.loads(await ws.recv())
        assert updated["type"] == "transcription_session.updated"
        assert updated["session"]["turn_detection"] is None
        for payload in appends():
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": payload}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        async with asyncio.timeout(10):
            while not received or not received[-1]["type"].endswith("transcription.completed"):
                received.append(json.loads(await ws.recv()))
    kinds = [event["type"] for event in received]
    assert "conversation.item.created" in kinds and "conversation.item.added" not in kinds
    assert received[-1]["transcript"] == TRANSCRIPT
    upstream = fresh.fake.sockets[-1]
    assert upstream.dialect == "ga" and not upstream.of("transcription_session.update")
    assert upstream.of("session.update")[-1]["session"]["audio"]["input"]["turn_detection"] is None
    assert len(upstream.of("input_audio_buffer.commit")) == 1


async def test_a_ga_client_is_translated_for_a_beta_provider(fresh: ProviderSetup) -> None:
    _, key = Admin(fresh.server).create_key()
    log = await committed_turn(fresh, key, "relayed-beta")
    assert log.of("session.updated") and log.of("conversation.item.added")
    assert not log.of("conversation.item.created")
    assert log.completed[0]["transcript"] == TRANSCRIPT
    upstream = fresh.fake.sockets[-1]
    assert upstream.dialect == "beta" and upstream.headers.get("openai-beta") == "realtime=v1"
    beta_update = upstream.of("transcription_session.update")[-1]["session"]
    assert beta_update["input_audio_transcription"]["model"] == "gpt-4o-mini-transcribe"
    assert beta_update["turn_detection"] is None


async def test_a_revoked_key_is_cut_off_mid_stream(fresh: ProviderSetup) -> None:
    admin = Admin(fresh.server)
    key_id, key = admin.create_key()
    ws = await plain_socket(fresh, key)
    assert json.loads(await ws.recv())["type"] == "session.created"
    payloads = appends()[:10]
    for payload in payloads:
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": payload}))
        await asyncio.sleep(CHUNK_MS / 1000)
    await asyncio.sleep(0.2)
    revoked_at = time.monotonic()
    await asyncio.to_thread(admin.revoke, key_id)
    events, code = await until_closed(ws)
    assert time.monotonic() - revoked_at <= 1.5
    assert errors(events)[-1:] == ["invalid_api_key"] and code == 1008
    record = await the_record(fresh.database_url, key_id)
    assert (record.outcome, record.audio_ms) == ("revoked", len(payloads) * CHUNK_MS)


async def test_a_provider_closing_with_1011_ends_the_session_with_a_generic_error(
    fresh: ProviderSetup,
) -> None:
    fresh.fake.faults.close_1011_after_s = 0.5
    key_id, key = Admin(fresh.server).create_key()
    ws = await plain_socket(fresh, key)
    assert json.loads(await ws.recv())["type"] == "session.created"
    events, code = await until_closed(ws)
    assert code == 1011 and errors(events) == ["server_error"]
    message = events[-1]["error"]["message"]
    assert "ref " in message
    no_secrets(json.dumps(events), fresh)
    assert (await the_record(fresh.database_url, key_id)).outcome == "upstream_error"


async def test_a_provider_refusing_earshots_key_is_a_generic_error(fresh: ProviderSetup) -> None:
    fresh.fake.faults.fail_next(status=401)
    key_id, key = Admin(fresh.server).create_key()
    ws = await plain_socket(fresh, key)
    events, code = await until_closed(ws)
    assert code == 1011 and errors(events) == ["server_error"]
    no_secrets(json.dumps(events), fresh)
    no_secrets(fresh.server.log_text(), fresh)
    assert (await the_record(fresh.database_url, key_id)).outcome == "upstream_error"


async def test_azure_models_are_relayed_to_azures_socket(fresh: ProviderSetup) -> None:
    _, key = Admin(fresh.server).create_key()
    log = await committed_turn(fresh, key, "azure")
    assert log.completed[0]["transcript"] == TRANSCRIPT
    upstream = fresh.fake.sockets[-1]
    assert upstream.path == "/openai/realtime" and upstream.query["deployment"] == "my-transcribe"
    assert "api-key" in upstream.headers and "authorization" not in upstream.headers


@pytest.mark.parametrize("model", ["relayed", "compatible"])
async def test_a_session_that_switches_to_a_provider_model_streams_through_its_engine(
    fresh: ProviderSetup, model: str
) -> None:
    # Connected on a local model, the session is not relayed: earshot's own session drives the provider's
    # engine stream (the Realtime socket for openai, LocalAgreement re-decodes for openai_compatible).
    key_id, key = Admin(fresh.server).create_key()
    log = await committed_turn(fresh, key, "blank", {"transcription": {"model": model}})
    assert TRANSCRIPT in log.completed[0]["transcript"]
    if model == "relayed":
        upstream = fresh.fake.sockets[-1]
        assert upstream.of("session.update")[0]["session"]["audio"]["input"]["turn_detection"] is None
        assert len(upstream.of("input_audio_buffer.commit")) == 1
    else:
        assert not fresh.fake.sockets and fresh.fake.requests
    record = await the_record(fresh.database_url, key_id)
    assert (record.outcome, record.model) == ("ok", model)
