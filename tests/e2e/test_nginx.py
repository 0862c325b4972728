"""Real nginx with deploy/nginx/earshot.conf before a real earshot: live sockets, SSE, client addresses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from deepgram import AsyncDeepgramClient

from tests.conftest import (
    ADMIN_TOKEN,
    Admin,
    RunningServer,
    free_port,
    start_server,
    stop_server,
    streamed_deltas,
)
from tests.e2e.realtime_client import EventLog, chunks, collect, paced, pcm24, silence, speech, trimmed
from tests.e2e.test_deepgram import CHUNK_BYTES, RATE_HZ, environment, pcm16, transcript_of
from tests.e2e.test_openai_realtime import TRANSCRIPTION
from tests.e2e.wer import words

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SITE = Path(__file__).parents[2] / "deploy" / "nginx" / "earshot.conf"
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
# Requests per minute per client address: low enough to reach in a test, above what the other tests send.
IP_RPM = 6


def nginx_config(prefix: Path, listen_port: int, earshot_port: int) -> Path:
    """An nginx.conf under `prefix` serving the deploy/ site on `listen_port`, proxying to earshot."""
    site = SITE.read_text()
    assert "server 127.0.0.1:8000;" in site and "listen 80;" in site
    site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{earshot_port};")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen_port};").replace("listen [::]:80;", "")
    (prefix / "earshot.conf").write_text(site)
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp_paths = "\n".join(f"    {kind}_temp_path {prefix / kind};" for kind in kinds)
    config = prefix / "nginx.conf"
    config.write_text(
        f"""daemon off;
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix / "access.log"};
{temp_paths}
    include {prefix / "earshot.conf"};
}}
"""
    )
    return config


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """earshot behind nginx: a RunningServer whose base URL is nginx's."""
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run installs it)")
    tmp = tmp_path_factory.mktemp("nginx")
    earshot = start_server(tmp, {"EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN, "EARSHOT_IP_RPM": str(IP_RPM)})
    prefix = tmp / "nginx"
    prefix.mkdir()
    port = free_port()
    config = nginx_config(prefix, port, int(earshot.base_url.rsplit(":", 1)[1]))
    nginx = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(config)], stderr=subprocess.PIPE)
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            assert nginx.poll() is None, nginx.stderr.read().decode() if nginx.stderr else "nginx exited"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "nginx did not answer within 20 s"
            time.sleep(0.1)
        yield RunningServer(base_url, earshot.process, earshot.log_path)
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        stop_server(earshot)


async def test_a_realtime_transcription_session_passes_through_nginx(proxied: RunningServer) -> None:
    sentence = trimmed(speech("pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0880.wav"))
    audio = np.concatenate([silence(0.3), sentence, silence(1.5)])
    log = EventLog()
    _, key = Admin(proxied).create_key()
    sdk = openai.AsyncOpenAI(base_url=f"{proxied.base_url}/v1", api_key=key, max_retries=0)
    async with sdk.realtime.connect(extra_query=TRANSCRIPTION) as connection:
        assert (await connection.recv()).type == "session.created"

        async def append(payload: str) -> None:
            await connection.input_audio_buffer.append(audio=payload)

        sending = asyncio.create_task(paced(chunks(pcm24(audio), 48_000, 40), 40, append))
        await collect(connection, log, until_completed=1, timeout_s=len(audio) / 16_000 + 10)
        await sending
    completed = log.completed[0]
    assert len(completed["transcript"].split()) >= 5
    assert "".join(log.deltas(completed["item_id"])) == completed["transcript"]


async def test_a_deepgram_live_stream_passes_through_nginx(proxied: RunningServer) -> None:
    _, key = Admin(proxied).create_key()
    audio = pcm16("jfk/jfk.flac", silence_s=1.0)
    client = AsyncDeepgramClient(api_key=key, environment=environment(proxied))
    received: list[Any] = []
    async with client.listen.v1.connect(
        model="nova-3", encoding="linear16", sample_rate=RATE_HZ, interim_results="true"
    ) as connection:

        async def read() -> None:
            async for message in connection:
                received.append(message)

        reader = asyncio.create_task(read())
        for start in range(0, len(audio), CHUNK_BYTES):
            await connection.send_media(audio[start : start + CHUNK_BYTES])
            await asyncio.sleep(0.025)  # four times real time
        await connection.send_close_stream()
        await asyncio.wait_for(reader, 30)
    results = [m for m in received if type(m).__name__ == "ListenV1Results"]
    finals = [m for m in results if m.is_final and transcript_of(m)]
    assert {"fellow", "americans", "country"} <= set(words(" ".join(transcript_of(m) for m in finals)))
    assert type(received[-1]).__name__ == "ListenV1Metadata"


def test_an_sse_stream_arrives_event_by_event_through_nginx(proxied: RunningServer) -> None:
    _, key = Admin(proxied).create_key()
    client = openai.OpenAI(base_url=f"{proxied.base_url}/v1", api_key=key, max_retries=0)
    streamed = streamed_deltas(client, "faster-whisper/multilingual.mp3")
    assert len(streamed.deltas) >= 2
    assert "".join(delta for _, delta in streamed.deltas) == streamed.done_text
    first_at_s = streamed.deltas[0][0]
    assert first_at_s < streamed.done_at_s - 0.5, (
        "the first delta arrives well before decoding ends, not buffered"
    )


def test_the_limiter_sees_each_real_client_behind_nginx_and_not_a_forged_address(
    proxied: RunningServer,
) -> None:
    def from_address(address: str, **headers: str) -> int:
        with httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30) as http:
            response = http.post(
                f"{proxied.base_url}/v1/audio/transcriptions",
                headers={"Authorization": "Bearer not-a-key", **headers},
                files={"file": ("clip.wav", b"RIFF", "audio/wav")},
                data={"model": "whisper-1"},
            )
            return response.status_code

    Admin(proxied).create_key()  # once a key exists, a request with a wrong one is refused (401)
    # The address limit comes before the key check, so each refused key still counts against its address.
    assert [from_address("127.0.0.3") for _ in range(IP_RPM)] == [401] * IP_RPM
    assert from_address("127.0.0.3") == 429
    assert from_address("127.0.0.3", **{"X-Forwarded-For": "127.0.0.99"}) == 429, "nginx replaces the header"
    assert from_address("127.0.0.4") == 401, "another client behind the same proxy has its own limit"
