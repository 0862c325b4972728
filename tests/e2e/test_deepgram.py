"""The Deepgram API end to end: the official deepgram-sdk (and plain WebSockets) against a real server."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from deepgram import AsyncDeepgramClient, DeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import float_to_pcm16
from tests.conftest import (
    ADMIN_TOKEN,
    Admin,
    RunningServer,
    shared_audio,
    sqlite_url,
    start_server,
    stop_server,
    usage_records,
)
from tests.e2e.realtime_client import ulaw8
from tests.e2e.session_end import the_record
from tests.e2e.wer import words
from tests.fakes.server import serving
from tests.opus import opus_in_container

# deepgram-sdk 7 connects with websockets' legacy client, which warns that it is deprecated.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RATE_HZ = 16_000
CHUNK_MS = 100
CHUNK_BYTES = RATE_HZ * 2 * CHUNK_MS // 1000


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str]]:
    """A server with keys (an admin token) that may fetch URLs from `localhost` only, and its database URL."""
    tmp = tmp_path_factory.mktemp("deepgram")
    env = {"EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN, "EARSHOT_LISTEN_URL_HOSTS": "localhost"}
    server = start_server(tmp, env)
    try:
        yield server, sqlite_url(tmp)
    finally:
        stop_server(server)


def environment(server: RunningServer) -> DeepgramClientEnvironment:
    ws = server.base_url.replace("http://", "ws://")
    return DeepgramClientEnvironment(
        base=server.base_url, production=ws, agent=ws, agent_rest=server.base_url
    )


def listen_url(server: RunningServer, query: str = "encoding=linear16&sample_rate=16000") -> str:
    return server.base_url.replace("http://", "ws://") + "/v1/listen?" + query


def pcm16(relpath: str, silence_s: float = 0.0) -> bytes:
    samples = decode_audio(shared_audio(relpath).read_bytes()).samples
    return float_to_pcm16(np.concatenate([samples, np.zeros(int(silence_s * RATE_HZ), np.float32)]))


def webm_opus(relpath: str) -> bytes:
    """A shared clip as WebM/Opus at 48 kHz, as a browser's MediaRecorder sends it."""
    samples = decode_audio(shared_audio(relpath).read_bytes()).samples
    pcm = np.frombuffer(float_to_pcm16(np.repeat(samples, 3)), dtype="<i2")  # 48 kHz, crudely
    return opus_in_container(pcm, "webm")


def transcript_of(message: Any) -> str:
    return str(message.channel.alternatives[0].transcript)


async def test_live_stream_with_the_sdk_interim_and_final_results_finalize_and_metadata(
    keyed: tuple[RunningServer, str],
) -> None:
    server, url = keyed
    key_id, key = Admin(server).create_key()
    audio = pcm16("jfk/jfk.flac", silence_s=1.0)
    finalize_at = len(audio) // 2 - (len(audio) // 2) % CHUNK_BYTES
    client = AsyncDeepgramClient(api_key=key, environment=environment(server))
    received: list[tuple[float, Any]] = []
    async with client.listen.v1.connect(
        model="nova-3",
        encoding="linear16",
        sample_rate=RATE_HZ,
        interim_results="true",
        vad_events="true",
        punctuate="true",
    ) as connection:

        async def read() -> None:
            async for message in connection:
                received.append((time.monotonic(), message))

        reader = asyncio.create_task(read())
        for start in range(0, len(audio), CHUNK_BYTES):
            if start == finalize_at:
                await connection.send_finalize()
                finalized = time.monotonic()
            await connection.send_media(audio[start : start + CHUNK_BYTES])
            await asyncio.sleep(CHUNK_MS / 1000 / 4)  # four times real time
        await connection.send_close_stream()
        await asyncio.wait_for(reader, 30)

    names = [type(message).__name__ for _, message in received]
    results = [message for _, message in received if type(message).__name__ == "ListenV1Results"]
    interim = [r for r in results if not r.is_final and transcript_of(r)]
    finals = [r for r in results if r.is_final and transcript_of(r)]
    assert "ListenV1SpeechStarted" in names
    assert interim, "interim results while the audio streams"
    assert finals and all(r.channel.alternatives[0].words for r in finals)
    for word in (w for r in finals for w in r.channel.alternatives[0].words):
        assert 0 <= word.start <= word.end <= len(audio) / 2 / RATE_HZ + 0.1
        assert 0 <= word.confidence <= 1 and word.punctuated_word
    flushed = [(t, r) for t, r in received if type(r).__name__ == "ListenV1Results" and r.from_finalize]
    assert flushed and flushed[0][0] > finalized, "the Finalize flushed the speech heard so far"
    after = [r for t, r in received if t > flushed[0][0] and r in finals and not r.from_finalize]
    assert after, "the stream stayed open after the Finalize and went on transcribing"
    heard = words(" ".join(transcript_of(r) for r in finals))
    assert {"fellow", "americans", "country", "you"} <= set(heard), heard
    metadata = received[-1][1]
    assert type(metadata).__name__ == "ListenV1Metadata", names[-3:]
    assert metadata.sha256 == hashlib.sha256(audio).hexdigest()
    assert metadata.duration == pytest.approx(len(audio) / 2 / RATE_HZ, abs=0.01) and metadata.channels == 1
    record = await the_record(url, key_id)
    assert (record.outcome, record.route, record.audio_ms) == (
        "ok",
        "/v1/listen",
        len(audio) * 1000 // 32_000,
    )


def test_prerecorded_with_the_sdk_gives_words_and_utterances(keyed: tuple[RunningServer, str]) -> None:
    server, url = keyed
    key_id, key = Admin(server).create_key()
    client = DeepgramClient(api_key=key, environment=environment(server))
    wav = shared_audio("pocketsphinx-testdata/goforward.wav").read_bytes()
    response = client.listen.v1.media.transcribe_file(
        request=wav, model="nova-3", punctuate=True, utterances=True, diarize=True
    )
    alternative = response.results.channels[0].alternatives[0]
    assert words(alternative.transcript) == ["go", "forward", "ten", "meters"]
    assert alternative.transcript.startswith("Go") and alternative.transcript.endswith(".")
    assert [w.word for w in alternative.words] == ["go", "forward", "10", "meters"]
    assert all(0 <= w.start < w.end <= 2.8 and w.speaker == 0 for w in alternative.words)
    assert response.metadata.duration == pytest.approx(2.786, abs=0.01)
    assert response.metadata.sha256 == hashlib.sha256(wav).hexdigest()
    (utterance,) = response.results.utterances
    assert words(utterance.transcript) == ["go", "forward", "ten", "meters"] and utterance.speaker == 0
    (record,) = [r for r in usage_records(url) if r.key_id == key_id]
    assert (record.outcome, record.audio_ms, record.route) == ("ok", 2786, "deepgram.listen")


def test_prerecorded_paragraphs_parse_with_the_sdk(keyed: tuple[RunningServer, str]) -> None:
    server, _ = keyed
    _, key = Admin(server).create_key()
    client = DeepgramClient(api_key=key, environment=environment(server))
    # Two sentences, a pause of two seconds, and a third: two paragraphs.
    base = "pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-"
    pieces = [pcm16(f"{base}0870.wav", 0.5), pcm16(f"{base}0890.wav", 2.0), pcm16(f"{base}0930.wav")]
    body = io.BytesIO()
    with wave.open(body, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE_HZ)
        wav.writeframes(b"".join(pieces))
    response = client.listen.v1.media.transcribe_file(
        request=body.getvalue(), model="nova-3", paragraphs=True, diarize=True
    )
    alternative = response.results.channels[0].alternatives[0]
    paragraphs = alternative.paragraphs
    assert paragraphs is not None and len(paragraphs.paragraphs) == 2, paragraphs
    first, second = paragraphs.paragraphs
    assert [len(p.sentences) for p in paragraphs.paragraphs] == [2, 1]
    assert words(first.sentences[0].text)[:3] == words("And Mr. John")
    assert words(second.sentences[0].text)[-2:] == ["amiable", "himself"]
    assert first.speaker == 0 and first.num_words == len(words(" ".join(s.text for s in first.sentences)))
    assert 0 <= first.start < first.sentences[1].start < first.end < second.start - 1.5 < second.end
    assert paragraphs.transcript.startswith("\nSpeaker 0: ") and "\n\nSpeaker 0: " in paragraphs.transcript
    assert words(paragraphs.transcript.replace("Speaker 0:", "")) == words(alternative.transcript)


def test_prerecorded_raw_mulaw_and_bad_audio(keyed: tuple[RunningServer, str]) -> None:
    server, _ = keyed
    _, key = Admin(server).create_key()
    headers = {"Authorization": f"Token {key}"}
    samples = decode_audio(shared_audio("pocketsphinx-testdata/goforward.wav").read_bytes()).samples
    body = ulaw8(samples)
    response = httpx.post(
        f"{server.base_url}/v1/listen?encoding=mulaw&sample_rate=8000",
        content=body,
        headers=headers,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert "forward" in response.json()["results"]["channels"][0]["alternatives"][0]["transcript"]
    bad = httpx.post(
        f"{server.base_url}/v1/listen", content=b"not audio at all" * 100, headers=headers, timeout=60
    )
    assert bad.status_code == 400
    assert bad.json()["err_code"] == "Bad Request" and "failed to process audio" in bad.json()["err_msg"]


async def test_bad_query_parameters_are_refused_with_400_and_deepgrams_error_body(
    keyed: tuple[RunningServer, str],
) -> None:
    server, url = keyed
    key_id, key = Admin(server).create_key()
    headers = {"Authorization": f"Token {key}"}
    for query in (
        "encoding=opus&sample_rate=48000",
        "encoding=linear16",
        "interim_results=maybe",
        "channels=99",
    ):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(listen_url(server, query), additional_headers=headers)
        assert refused.value.response.status_code == 400
        body = json.loads(refused.value.response.body or b"{}")
        assert body["err_code"] == "Bad Request" and body["err_msg"] and body["request_id"]
    client = AsyncDeepgramClient(api_key=key, environment=environment(server))
    with pytest.raises(ApiError) as sdk_refused:
        async with client.listen.v1.connect(model="nova-3", encoding="speex", sample_rate=16000):
            pass
    assert sdk_refused.value.status_code == 400
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{server.base_url}/v1/listen?punctuate=often", content=b"x", headers=headers
        )
    assert response.status_code == 400 and "punctuate" in response.json()["err_msg"]
    # Options earshot can't honour, where ignoring them would hand back something else than was asked.
    for query in ("redact=pci", "multichannel=true", "callback=https://example.com/hook", "summarize=v2"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(listen_url(server, query), additional_headers=headers)
        body = json.loads(refused.value.response.body or b"{}")
        assert refused.value.response.status_code == 400 and body["err_code"] == "Bad Request"
        assert "not supported by this server" in body["err_msg"], body
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{server.base_url}/v1/listen?{query}", content=b"x", headers=headers)
        assert response.status_code == 400 and query.split("=")[0] in response.json()["err_msg"]
    with pytest.raises(ApiError) as sdk_refused:
        async with client.listen.v1.connect(model="nova-3", redact="pci"):
            pass
    assert sdk_refused.value.status_code == 400
    await asyncio.sleep(0.3)
    records = await asyncio.to_thread(usage_records, url)
    assert [r for r in records if r.key_id == key_id] == [], "refused before admission: nothing to meter"


@pytest.mark.parametrize("model", ["nova-3", "pocketsphinx"])
async def test_punctuated_interim_stream_has_no_one_word_finals(
    keyed: tuple[RunningServer, str], model: str
) -> None:
    # pocketsphinx settles words before the pause, Whisper decodes each phrase whole: finals are phrases.
    server, _ = keyed
    _, key = Admin(server).create_key()
    audio = pcm16("pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0870.wav", 1.0)
    query = f"model={model}&encoding=linear16&sample_rate={RATE_HZ}&interim_results=true&punctuate=true"
    finals: list[dict[str, Any]] = []
    interims = 0
    async with websockets.connect(
        listen_url(server, query), additional_headers={"Authorization": f"Token {key}"}
    ) as ws:
        for start in range(0, len(audio), CHUNK_BYTES):
            await ws.send(audio[start : start + CHUNK_BYTES])
            await asyncio.sleep(CHUNK_MS / 1000 / 2)
        await ws.send(json.dumps({"type": "CloseStream"}))
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] == "Results" and message["is_final"]:
                finals.append(message)
            elif message["type"] == "Results":
                interims += 1
    texts = [
        f["channel"]["alternatives"][0]["transcript"]
        for f in finals
        if f["channel"]["alternatives"][0]["words"]
    ]
    assert interims and texts, finals
    assert all(len(text.split()) > 1 for text in texts), texts
    # The first phrase is decoded whole from its start (whether Whisper hears the leading "And" varies with
    # the CPU's int8 kernels).
    opening = words(" ".join(texts))[:4]
    assert {"john", "dashwood"} <= set(opening) or model == "pocketsphinx", texts
    assert finals[-1]["speech_final"] is True, "the utterance's last final ends it"
    joined = " ".join(texts)
    assert joined.endswith(".") and joined.count(".") <= 2, "no period after every word"


async def test_keys_by_token_header_and_by_subprotocol_and_refusals(keyed: tuple[RunningServer, str]) -> None:
    server, url = keyed
    key_id, key = Admin(server).create_key()
    for headers in ({}, {"Authorization": "Token es_000000000000_wrong"}):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(listen_url(server), additional_headers=headers)
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body or b"{}")["err_code"] == "INVALID_AUTH"
    client = AsyncDeepgramClient(api_key="es_000000000000_wrong", environment=environment(server))
    with pytest.raises(ApiError) as sdk_refused:
        async with client.listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000):
            pass
    assert sdk_refused.value.status_code == 401
    # Browsers can't set headers: they offer the subprotocols `token` and the key; only `token` is echoed.
    async with websockets.connect(listen_url(server), subprotocols=["token", key]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "token"
        await ws.send(pcm16("pocketsphinx-testdata/goforward.wav", silence_s=1.0))
        await ws.send(json.dumps({"type": "CloseStream"}))
        messages = [json.loads(m) async for m in ws]
    assert messages[-1]["type"] == "Metadata"
    assert "forward" in " ".join(m["channel"]["alternatives"][0]["transcript"] for m in messages[:-1])
    assert (await the_record(url, key_id)).outcome == "ok"
    assert key not in server.log_text()


async def test_a_revoked_key_is_cut_off_mid_stream(keyed: tuple[RunningServer, str]) -> None:
    server, url = keyed
    admin = Admin(server)
    key_id, key = admin.create_key()
    audio = pcm16("jfk/jfk.flac")
    ws = await websockets.connect(listen_url(server), additional_headers={"Authorization": f"Token {key}"})
    for start in range(0, 10 * CHUNK_BYTES, CHUNK_BYTES):
        await ws.send(audio[start : start + CHUNK_BYTES])
        await asyncio.sleep(CHUNK_MS / 1000)
    revoked_at = time.monotonic()
    await asyncio.to_thread(admin.revoke, key_id)
    messages = []
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    assert time.monotonic() - revoked_at <= 1.5
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert closed.value.rcvd.reason == "INVALID_AUTH"
    assert [m["variant"] for m in messages if m["type"] == "Error"] == ["INVALID_AUTH"]
    record = await the_record(url, key_id)
    assert (record.outcome, record.audio_ms) == ("revoked", 10 * CHUNK_MS)


async def test_keepalive_holds_an_idle_stream_open_and_silence_closes_it_with_net_0001(
    keyed: tuple[RunningServer, str],
) -> None:
    server, url = keyed
    admin = Admin(server)
    assert admin.http.put("/admin/settings", json={"keepalive_s": 1.0}).status_code == 200
    try:
        await asyncio.sleep(0.7)
        key_id, key = admin.create_key()
        ws = await websockets.connect(
            listen_url(server), additional_headers={"Authorization": f"Token {key}"}
        )
        await ws.send(b"\x00\x00" * (RATE_HZ // 2))
        for _ in range(5):
            await asyncio.sleep(0.5)
            await ws.send(json.dumps({"type": "KeepAlive"}))
        quiet_from = time.monotonic()
        messages = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    finally:
        admin.http.delete("/admin/settings/keepalive_s")
    assert 0.8 <= time.monotonic() - quiet_from <= 2.5, "open through the KeepAlives, closed once they stop"
    assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        1011,
        "NET-0001",
    )
    assert [m["type"] for m in messages][-2:] == ["Error", "Metadata"]
    record = await the_record(url, key_id)
    assert (record.outcome, record.audio_ms) == ("timeout", 500)


async def test_containerized_webm_opus_is_decoded_as_it_streams(keyed: tuple[RunningServer, str]) -> None:
    server, url = keyed
    key_id, key = Admin(server).create_key()
    data = webm_opus("pocketsphinx-testdata/goforward.wav")
    query = "interim_results=true"
    async with websockets.connect(
        listen_url(server, query), additional_headers={"Authorization": f"Token {key}"}
    ) as ws:
        for start in range(0, len(data), 1000):
            await ws.send(data[start : start + 1000])
            await asyncio.sleep(0.01)
        await ws.send(json.dumps({"type": "Finalize"}))
        flushed = []
        while not flushed:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message["type"] == "Results" and message.get("from_finalize"):
                flushed.append(message)
        await ws.send(json.dumps({"type": "CloseStream"}))
        rest = [json.loads(m) async for m in ws]
    assert rest[-1]["type"] == "Metadata"
    record = await the_record(url, key_id)
    assert record.outcome == "ok" and 2700 <= record.audio_ms <= 2900, "metered as decoded audio"


async def test_garbage_in_a_container_stream_closes_with_data_0000(keyed: tuple[RunningServer, str]) -> None:
    server, url = keyed
    key_id, key = Admin(server).create_key()
    async with websockets.connect(
        listen_url(server, ""), additional_headers={"Authorization": f"Token {key}"}
    ) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            for _ in range(200):
                await ws.send(b"this is not audio " * 200)
                await asyncio.sleep(0.01)
            await ws.send(json.dumps({"type": "CloseStream"}))
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        1008,
        "DATA-0000",
    )
    assert (await the_record(url, key_id)).outcome == "client_closed"


def test_urls_are_fetched_only_from_allowed_hosts(keyed: tuple[RunningServer, str], tmp_path: Path) -> None:
    server, _ = keyed
    _, key = Admin(server).create_key()
    wav = shared_audio("pocketsphinx-testdata/goforward.wav").read_bytes()
    fetched: list[str] = []

    async def clip(request: Any) -> Response:
        fetched.append(request.url.path)
        return Response(wav, media_type="audio/wav")

    headers = {"Authorization": f"Token {key}"}
    with serving(Starlette(routes=[Route("/clip.wav", clip)])) as host:
        allowed = f"http://localhost:{host.port}/clip.wav"
        response = httpx.post(
            f"{server.base_url}/v1/listen", json={"url": allowed}, headers=headers, timeout=60
        )
        assert response.status_code == 200, response.text
        assert "forward" in response.json()["results"]["channels"][0]["alternatives"][0]["transcript"]
        other = f"http://127.0.0.1:{host.port}/clip.wav"
        refused = httpx.post(f"{server.base_url}/v1/listen", json={"url": other}, headers=headers, timeout=60)
        assert refused.status_code == 403 and refused.json()["err_code"] == "URL_NOT_ALLOWED"
        assert str(host.port) not in refused.text, "the refusal doesn't echo the url"
        # With no allow-list, no URL is fetched at all.
        plain = start_server(tmp_path)
        try:
            default = httpx.post(f"{plain.base_url}/v1/listen", json={"url": allowed}, timeout=60)
        finally:
            stop_server(plain)
        assert default.status_code == 403 and default.json()["err_code"] == "URL_NOT_ALLOWED"
    assert fetched == ["/clip.wav"]


async def test_credit_running_out_ends_the_stream_and_a_second_stream_over_the_limit_is_a_429(
    keyed: tuple[RunningServer, str],
) -> None:
    server, url = keyed
    admin = Admin(server)
    key_id, key = admin.create_key(credits_seconds=1, max_sessions=1)
    headers = {"Authorization": f"Token {key}"}
    ws = await websockets.connect(listen_url(server), additional_headers=headers)
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(listen_url(server), additional_headers=headers)
    assert refused.value.response.status_code == 429
    assert json.loads(refused.value.response.body or b"{}")["err_code"] == "TOO_MANY_REQUESTS"
    audio = pcm16("jfk/jfk.flac")
    with pytest.raises(websockets.ConnectionClosed) as closed:
        for start in range(0, 30 * CHUNK_BYTES, CHUNK_BYTES):
            await ws.send(audio[start : start + CHUNK_BYTES])
            await asyncio.sleep(CHUNK_MS / 1000 / 2)
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "INSUFFICIENT_CREDITS")
    record = await the_record(url, key_id)
    assert record.outcome == "insufficient_credits" and record.debited_ms == 1000
    assert admin.key(key_id)["credits_seconds"] == 0
