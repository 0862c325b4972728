"""The leak scan: no upstream key, upstream URL or upstream error detail reaches a caller or the INFO log.

Every route runs against fake upstreams mounted under a distinctive path (`/leak-probe-9c1e...`) with
distinctive keys; the fake OpenAI's error bodies carry SECRET_MARKER. Each test gathers everything the caller
could see (status lines, headers, bodies, SSE events, WebSocket messages and close reasons) and checks that
none of those strings is in it; the last test checks the server's log, written at its default INFO level.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from starlette.applications import Starlette
from starlette.routing import Mount
from websockets.exceptions import ConnectionClosed, InvalidStatus

from earshot.audio.pcm import float_to_pcm16
from tests.conftest import ADMIN_TOKEN, Admin, RunningServer, start_server, stop_server
from tests.e2e.catalogs import FAKE_KEY_ENV, openai_model, tone_wav, write_catalog
from tests.e2e.realtime_client import chunks, pcm24, silence, speech
from tests.fakes.deepgram import DeepgramFake
from tests.fakes.openai import OPENAI_KEY, SECRET_MARKER, FakeOpenAI
from tests.fakes.server import serving

PROBE_PATH = "leak-probe-9c1e"
DEEPGRAM_KEY = "dg-leak-probe-key-4e1a"
WRONG_OPENAI_KEY = "sk-leak-probe-wrong-key-77aa"
WRONG_DEEPGRAM_KEY = "dg-leak-probe-wrong-key-0b3d"
SECRETS = (PROBE_PATH, OPENAI_KEY, DEEPGRAM_KEY, WRONG_OPENAI_KEY, WRONG_DEEPGRAM_KEY, SECRET_MARKER)
ENV = {
    FAKE_KEY_ENV: OPENAI_KEY,
    "EARSHOT_TEST_PROBE_DEEPGRAM_KEY": DEEPGRAM_KEY,
    "EARSHOT_TEST_PROBE_WRONG_OPENAI_KEY": WRONG_OPENAI_KEY,
    "EARSHOT_TEST_PROBE_WRONG_DEEPGRAM_KEY": WRONG_DEEPGRAM_KEY,
}
GOFORWARD = "pocketsphinx-testdata/goforward.wav"
AUDIO = tone_wav(1.0)


@dataclass
class Probe:
    """A server whose models all reach fakes under the probe path, and a key to call it with."""

    server: RunningServer
    openai: FakeOpenAI
    deepgram: DeepgramFake
    key: str
    seen: list[str] = field(default_factory=list)

    @property
    def ws_base(self) -> str:
        return self.server.base_url.replace("http://", "ws://")


def under_probe_path(app: Any, suffix: str = "") -> Starlette:
    """The fake's app served below `/leak-probe-9c1e{suffix}`."""
    return Starlette(routes=[Mount(f"/{PROBE_PATH}{suffix}", app=app)])


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probe]:
    tmp: Path = tmp_path_factory.mktemp("leaks")
    openai_fake, deepgram_fake = FakeOpenAI("hello from the probe"), DeepgramFake(api_key=DEEPGRAM_KEY)
    with (
        serving(under_probe_path(openai_fake.app)) as openai_server,
        serving(under_probe_path(deepgram_fake.app, "-dg")) as deepgram_server,
    ):
        openai_url = f"{openai_server.base_url}/{PROBE_PATH}/v1"
        deepgram = {"engine": "deepgram", "base_url": f"{deepgram_server.base_url}/{PROBE_PATH}-dg"}
        catalog = write_catalog(
            tmp / "catalog.yaml",
            {
                "probe-openai": openai_model(openai_url),
                "probe-openai-local": openai_model(
                    openai_url, options={"language": "en", "upstream_realtime": False}
                ),
                "probe-openai-slow": openai_model(
                    openai_url, timeout_s=0.5, options={"language": "en", "upstream_realtime": False}
                ),
                "probe-openai-wrong-key": openai_model(
                    openai_url, api_key_env="EARSHOT_TEST_PROBE_WRONG_OPENAI_KEY"
                ),
                "probe-deepgram": {**deepgram, "api_key_env": "EARSHOT_TEST_PROBE_DEEPGRAM_KEY"},
                "probe-deepgram-wrong-key": {
                    **deepgram,
                    "api_key_env": "EARSHOT_TEST_PROBE_WRONG_DEEPGRAM_KEY",
                },
            },
            default_model="probe-openai",
        )
        env = {"EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN, "EARSHOT_CONFIG": str(catalog), **ENV}
        server = start_server(tmp, env)
        try:
            _, key = Admin(server).create_key(name="leak-probe", credits_seconds=10_000)
            yield Probe(server, openai_fake, deepgram_fake, key)
        finally:
            stop_server(server)


@pytest.fixture(autouse=True)
def healthy_fakes(probe: Probe) -> Iterator[None]:
    probe.openai.faults.reset()
    probe.deepgram.faults.reset()
    yield
    probe.openai.faults.reset()
    probe.deepgram.faults.reset()


def assert_clean(where: str, seen: str) -> None:
    """Fail naming the route and the secret when any secret appears in what the caller saw."""
    found = [secret for secret in SECRETS if secret.lower() in seen.lower()]
    assert not found, f"{where} leaked {found}:\n{seen[:3000]}"


def http_seen(response: httpx.Response) -> str:
    """A response as the caller sees it: status line, headers and body."""
    headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
    return f"HTTP {response.status_code} {response.reason_phrase}\n{headers}\n\n{response.text}"


def transcribe(probe: Probe, model: str, **fields: str) -> httpx.Response:
    return httpx.post(
        f"{probe.server.base_url}/v1/audio/transcriptions",
        files={"file": ("clip.wav", AUDIO, "audio/wav")},
        data={"model": model, **fields},
        headers={"Authorization": f"Bearer {probe.key}"},
        timeout=30,
    )


@pytest.mark.parametrize("model", ["probe-openai", "probe-deepgram"])
@pytest.mark.parametrize("response_format", ["json", "text", "verbose_json", "srt", "vtt"])
def test_one_shot_replies_leak_nothing(probe: Probe, model: str, response_format: str) -> None:
    response = transcribe(probe, model, response_format=response_format)
    assert response.status_code == 200, response.text
    assert_clean(f"one-shot {model} {response_format}", http_seen(response))


@pytest.mark.parametrize("model", ["probe-openai", "probe-deepgram"])
def test_sse_streams_leak_nothing(probe: Probe, model: str) -> None:
    response = transcribe(probe, model, stream="true")
    assert response.status_code == 200
    assert "transcript.text.done" in response.text
    assert_clean(f"SSE {model}", http_seen(response))


@pytest.mark.parametrize(
    ("model", "fault", "caller_status"),
    [
        pytest.param("probe-openai-wrong-key", None, 502, id="openai-401"),
        pytest.param("probe-deepgram-wrong-key", None, 502, id="deepgram-401"),
        pytest.param("probe-openai", 500, 502, id="openai-500"),
        pytest.param("probe-deepgram", 500, 502, id="deepgram-500"),
        pytest.param("probe-openai", 400, 400, id="openai-400"),
        pytest.param("probe-openai-slow", "delay", 504, id="openai-timeout"),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["one-shot", "sse"])
def test_upstream_errors_leak_nothing(
    probe: Probe, model: str, fault: int | str | None, caller_status: int, stream: bool
) -> None:
    if fault == "delay":
        probe.openai.faults.delay_s = 2.0
    elif isinstance(fault, int):
        probe.openai.faults.fail_next(fault)
        probe.deepgram.faults.fail_next(fault)
    response = transcribe(probe, model, **({"stream": "true"} if stream else {}))
    seen = http_seen(response)
    if stream:
        assert response.status_code == 200 and '"type": "error"' in response.text, seen
    else:
        assert response.status_code == caller_status, seen
        assert response.json()["error"]["code"] == "upstream_error"
    assert_clean(f"upstream error {model} {fault}", seen)


async def realtime_session(probe: Probe, model: str, audio: np.ndarray | None) -> str:
    """A manual-commit /v1/realtime session; every handshake header, message and close reason it saw."""
    url = f"{probe.ws_base}/v1/realtime?intent=transcription&model={model}"
    seen: list[str] = []
    try:
        async with websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {probe.key}"}, open_timeout=10
        ) as ws:
            assert ws.response is not None
            seen.extend(f"{name}: {value}" for name, value in ws.response.headers.raw_items())
            update = {"type": "transcription", "audio": {"input": {"turn_detection": None}}}
            try:
                await ws.send(json.dumps({"type": "session.update", "session": update}))
                if audio is not None:
                    for payload in chunks(pcm24(audio), 48_000, 100):
                        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": payload}))
                    await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
                while True:
                    message = str(await _recv(ws))
                    seen.append(message)
                    kind = json.loads(message).get("type", "")
                    if kind.endswith((".completed", ".failed")) or kind == "error":
                        break
                await ws.close()
            except ConnectionClosed as closed:
                seen.append(f"close {closed.rcvd}")
    except InvalidStatus as refused:
        seen.append(refusal_seen(refused))
    return "\n".join(seen)


async def _recv(ws: websockets.ClientConnection) -> str | bytes:
    async with asyncio.timeout(20):
        return await ws.recv()


def refusal_seen(refused: InvalidStatus) -> str:
    """A refused WebSocket handshake as the caller sees it: status and body."""
    return f"HTTP {refused.response.status_code} {bytes(refused.response.body or b'').decode()}"


async def stream_speech_and_record(ws: websockets.ClientConnection, close: str, seen: list[str]) -> None:
    """Send the clip and a second of silence as 100 ms PCM16 frames, then `close`; record all until closed."""
    pcm = float_to_pcm16(np.concatenate([speech(GOFORWARD), silence(1.0)]))
    try:
        for at in range(0, len(pcm), 3200):
            await ws.send(pcm[at : at + 3200])
        await ws.send(close)
        while True:
            seen.append(str(await _recv(ws)))
    except ConnectionClosed as closed:
        seen.append(f"close {closed.rcvd}")


REALTIME_CASES = [
    # (model, fault): the relay (probe-openai), the local live path over REST (probe-openai-local) and over
    # Deepgram's live socket (probe-deepgram), healthy and failing every way each upstream can fail.
    *(
        pytest.param(model, fault, id=f"{model}-{fault or 'ok'}")
        for model in ("probe-openai", "probe-openai-local", "probe-deepgram")
        for fault in (None, 500)
    ),
    pytest.param("probe-openai-wrong-key", None, id="relay-401"),
    pytest.param("probe-deepgram-wrong-key", None, id="deepgram-401"),
    pytest.param("probe-openai", "close-1011", id="relay-close-1011"),
    pytest.param("probe-deepgram", "close-1011", id="deepgram-close-1011"),
    pytest.param("probe-openai", "error-event", id="relay-server-error-event"),
    pytest.param("probe-openai-slow", "delay", id="local-timeout"),
]


@pytest.mark.parametrize(("model", "fault"), REALTIME_CASES)
async def test_realtime_sessions_leak_nothing(probe: Probe, model: str, fault: int | str | None) -> None:
    if fault == 500:
        probe.openai.faults.fail_next(500, times=3)
        probe.deepgram.faults.fail_next(500, times=3)
    elif fault == "close-1011":
        probe.openai.faults.close_1011_after_s = 0.01
        probe.deepgram.faults.close_1011_after_audio_s = 1.0
    elif fault == "error-event":
        probe.openai.faults.server_error_events = True
    elif fault == "delay":
        probe.openai.faults.delay_s = 2.0
    seen = await realtime_session(probe, model, speech(GOFORWARD))
    if fault is not None or "wrong-key" in model:
        assert "error" in seen or "failed" in seen, seen
    else:
        assert ".completed" in seen, seen
    assert_clean(f"/v1/realtime {model} fault={fault}", seen)


async def test_managed_sessions_leak_nothing(probe: Probe) -> None:
    seen: list[str] = []
    for model in ("probe-deepgram", "probe-deepgram-wrong-key", "probe-openai-local"):
        async with websockets.connect(f"{probe.ws_base}/ws/transcribe", open_timeout=10) as ws:
            config = {"model": model, "sample_rate": 16_000, "interim_results": True}
            await ws.send(json.dumps({"type": "auth", "token": probe.key, "config": config}))
            await stream_speech_and_record(ws, json.dumps({"type": "close"}), seen)
    assert any('"type": "session_end"' in line or '"type":"session_end"' in line for line in seen), seen
    assert_clean("/ws/transcribe", "\n".join(seen))


def test_model_listings_leak_nothing(probe: Probe) -> None:
    auth = {"Authorization": f"Bearer {probe.key}"}
    for path in ("/v1/models", "/v1/models/probe-openai", "/v1/models/probe-deepgram"):
        response = httpx.get(f"{probe.server.base_url}{path}", headers=auth)
        assert response.status_code == 200
        assert_clean(f"GET {path}", http_seen(response))


@pytest.mark.parametrize(
    "model", ["probe-openai", "probe-openai-wrong-key", "probe-openai-slow", "probe-deepgram-wrong-key"]
)
def test_admin_model_checks_leak_nothing(probe: Probe, model: str) -> None:
    if model == "probe-openai-slow":
        probe.openai.faults.delay_s = 2.0
    response = httpx.post(
        f"{probe.server.base_url}/admin/models/{model}/test",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is (model == "probe-openai")
    assert_clean(f"admin test {model}", http_seen(response))


DEEPGRAM_API = importlib.util.find_spec("earshot.api.deepgram.live") is not None


@pytest.mark.skipif(not DEEPGRAM_API, reason="the Deepgram-compatible routes (api/deepgram.py) are absent")
@pytest.mark.parametrize(
    ("model", "fault"),
    [
        ("probe-deepgram", None),
        ("probe-deepgram", 500),
        ("probe-deepgram", "close-1011"),
        ("probe-deepgram-wrong-key", None),
        ("probe-openai-wrong-key", None),
        ("probe-openai-local", 500),
    ],
)
async def test_deepgram_routes_leak_nothing(probe: Probe, model: str, fault: int | str | None) -> None:
    if fault == 500:
        probe.openai.faults.fail_next(500, times=4)
        probe.deepgram.faults.fail_next(500, times=2)
    elif fault == "close-1011":
        probe.deepgram.faults.close_1011_after_audio_s = 1.0
    auth = {"Authorization": f"Token {probe.key}"}
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{probe.server.base_url}/v1/listen",
            params={"model": model},
            content=AUDIO,
            headers={**auth, "Content-Type": "audio/wav"},
        )
    seen = [http_seen(response)]
    query = f"model={model}&encoding=linear16&sample_rate=16000&interim_results=true"
    try:
        async with websockets.connect(
            f"{probe.ws_base}/v1/listen?{query}", additional_headers=auth, open_timeout=10
        ) as ws:
            await stream_speech_and_record(ws, json.dumps({"type": "CloseStream"}), seen)
    except InvalidStatus as refused:
        seen.append(refusal_seen(refused))
    assert_clean(f"Deepgram routes {model}", "\n".join(seen))


def test_the_info_log_leaks_nothing(probe: Probe) -> None:
    """Runs last: the server's log after every route above, at the default INFO level."""
    log = probe.server.log_text()
    assert " INFO earshot" in log, "the log is written at INFO"
    assert_clean("the server log", log)
