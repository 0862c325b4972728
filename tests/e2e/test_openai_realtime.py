"""The official openai SDK's Realtime client against /v1/realtime?intent=transcription on a real server."""

from __future__ import annotations

import asyncio
import contextlib
import json

import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI

from tests.conftest import RunningServer
from tests.e2e.realtime_client import (
    EventLog,
    alaw8,
    chunks,
    collect,
    commit_manually,
    paced,
    pcm24,
    silence,
    speech,
    trimmed,
    ulaw8,
)
from tests.e2e.wer import words

GOFORWARD = "pocketsphinx-testdata/goforward.wav"
TRANSCRIPTION = {"intent": "transcription"}


def sdk(server: RunningServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def ws_url(server: RunningServer) -> str:
    return server.base_url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"


async def test_sdk_gets_deltas_while_speaking_that_add_up_to_each_completed_transcript(
    server: RunningServer,
) -> None:
    # Two sentences with a short breath between them, streamed at real-time pace in 40 ms chunks.
    first = trimmed(speech("pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0880.wav"))
    second = trimmed(speech("pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0930.wav"))
    audio = np.concatenate([silence(0.4), first, silence(0.2), second, silence(1.5)])
    log = EventLog()
    async with sdk(server).realtime.connect(extra_query=TRANSCRIPTION) as connection:
        created = await connection.recv()
        assert created.type == "session.created"

        async def append(payload: str) -> None:
            await connection.input_audio_buffer.append(audio=payload)

        sending = asyncio.create_task(paced(chunks(pcm24(audio), 48_000, 40), 40, append))
        with contextlib.suppress(TimeoutError):
            await collect(connection, log, until_completed=3, timeout_s=len(audio) / 16_000 + 3)
        await sending
    items = [event["item_id"] for event in log.of("input_audio_buffer.speech_stopped")]
    assert items and [event["item_id"] for event in log.completed] == items
    words = " ".join(event["transcript"] for event in log.completed).split()
    assert len(words) >= 10
    for event in log.completed:
        assert "".join(log.deltas(event["item_id"])) == event["transcript"]
        assert event["usage"]["type"] == "duration" and event["usage"]["seconds"] > 0.5
        assert all(
            t < log.at("conversation.item.input_audio_transcription.completed", event["item_id"])
            for t, e in log.events
            if e["type"].endswith(".delta") and e["item_id"] == event["item_id"]
        )
    assert any(
        log.at("conversation.item.input_audio_transcription.delta", item)
        < log.at("input_audio_buffer.speech_stopped", item)
        for item in items
    ), "text arrives before the turn is over"


async def test_sdk_manual_commit_transcribes_the_buffer(server: RunningServer) -> None:
    audio = pcm24(speech(GOFORWARD))
    log = EventLog()
    async with sdk(server).realtime.connect(extra_query=TRANSCRIPTION) as connection:
        await connection.recv()
        await commit_manually(connection, chunks(audio, 48_000, 100))
        await collect(connection, log, until_completed=1, timeout_s=30)
    updated = log.of("session.updated")[0]["session"]
    assert updated["audio"]["input"]["turn_detection"] is None
    assert not log.of("input_audio_buffer.speech_started"), "no server VAD in manual mode"
    committed = log.of("input_audio_buffer.committed")[0]
    assert log.of("conversation.item.added")[0]["item"]["id"] == committed["item_id"]
    assert log.completed[0]["item_id"] == committed["item_id"]
    assert log.completed[0]["transcript"] == "Go forward 10 meters."
    assert "".join(log.deltas(committed["item_id"])) == "Go forward 10 meters."


async def test_sdk_g711_ulaw_input_is_transcribed(server: RunningServer) -> None:
    log = EventLog()
    async with sdk(server).realtime.connect(extra_query=TRANSCRIPTION) as connection:
        await connection.recv()
        payloads = chunks(ulaw8(speech(GOFORWARD)), 8_000, 20)
        await commit_manually(connection, payloads, format={"type": "audio/pcmu"})
        await collect(connection, log, until_completed=1, timeout_s=30)
    assert log.of("session.updated")[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    heard = words(log.completed[0]["transcript"])
    assert len(set(heard) & {"go", "forward", "ten", "meters"}) >= 3, heard


async def test_beta_dialect_with_g711_alaw_over_a_plain_websocket(server: RunningServer) -> None:
    headers = {"OpenAI-Beta": "realtime=v1"}
    async with websockets.connect(ws_url(server), additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["type"] == "transcription_session.created"
        update = {
            "type": "transcription_session.update",
            "session": {"input_audio_format": "g711_alaw", "turn_detection": None},
        }
        await ws.send(json.dumps(update))
        updated = json.loads(await ws.recv())
        assert updated["type"] == "transcription_session.updated"
        assert updated["session"]["input_audio_format"] == "g711_alaw"
        for payload in chunks(alaw8(speech(GOFORWARD)), 8_000, 50):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": payload}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        kinds = []
        while not kinds or kinds[-1]["type"] != "conversation.item.input_audio_transcription.completed":
            kinds.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    types = [event["type"] for event in kinds]
    assert "conversation.item.created" in types, "beta clients get item.created, not item.added"
    assert len(set(words(kinds[-1]["transcript"])) & {"go", "forward", "ten", "meters"}) >= 3


async def test_bad_events_get_error_events_and_the_session_goes_on(server: RunningServer) -> None:
    async with websockets.connect(ws_url(server)) as ws:
        await ws.recv()
        bad = [
            ("{not json", "invalid_json"),
            (json.dumps({"type": "input_audio_buffer.shout", "event_id": "e1"}), "unknown_event_type"),
            (
                json.dumps({"type": "input_audio_buffer.append", "audio": "%%%", "event_id": "e2"}),
                "invalid_base64",
            ),
            (json.dumps({"type": "input_audio_buffer.append", "audio": 5, "event_id": "e3"}), "invalid_type"),
            (
                json.dumps({"type": "input_audio_buffer.commit", "event_id": "e4"}),
                "input_audio_buffer_commit_empty",
            ),
            (
                json.dumps(
                    {"type": "session.update", "session": {"audio": {"input": {"format": {"type": "mp3"}}}}}
                ),
                "invalid_value",
            ),
        ]
        for message, code in bad:
            await ws.send(message)
            error = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert error["type"] == "error" and error["error"]["code"] == code, error
            sent = json.loads(message) if message.startswith('{"') else {}
            assert error["error"]["event_id"] == sent.get("event_id")
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
                }
            )
        )
        assert json.loads(await ws.recv())["type"] == "session.updated"
        for payload in chunks(pcm24(speech(GOFORWARD)), 48_000, 100):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": payload}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        while (event := json.loads(await asyncio.wait_for(ws.recv(), 30)))["type"] != (
            "conversation.item.input_audio_transcription.completed"
        ):
            pass
        assert event["transcript"] == "Go forward 10 meters."


async def test_a_frame_over_the_size_limit_closes_with_1009(server: RunningServer) -> None:
    async with websockets.connect(ws_url(server), max_size=None) as ws:
        await ws.recv()
        await ws.send("x" * (5 * 1024 * 1024))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_only_realtime_is_echoed_as_subprotocol_and_other_intents_are_refused(
    server: RunningServer,
) -> None:
    subprotocols = ["realtime", "openai-insecure-api-key.unused", "openai-beta.realtime-v1"]
    async with websockets.connect(ws_url(server), subprotocols=subprotocols) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "realtime"
        assert json.loads(await ws.recv())["type"] == "transcription_session.created"
    url = ws_url(server).replace("intent=transcription", "intent=conversation")
    async with websockets.connect(url) as ws:
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["error"]["code"] == "unsupported_intent"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
