"""Exactly one usage record per request, whatever way it ends, on SQLite and on PostgreSQL."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import (
    ADMIN_TOKEN,
    BACKENDS,
    SHORT_CLIP_MS,
    Admin,
    RunningServer,
    fresh_database,
    shared_audio,
    start_server,
    stop_server,
    transcribe_request,
    usage_records,
    wait_until,
)

CATALOG = """
default_model: english
models:
  english:
    engine: pocketsphinx
    price: 0.006
    unit: minute
  broken:
    engine: pocketsphinx
    options: {hmm: /nonexistent/acoustic-model}
"""


@pytest.fixture(scope="module", params=BACKENDS)
def metered(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, str]]:
    """A server whose catalog has a priced model and one whose engine fails, and its database URL."""
    tmp = tmp_path_factory.mktemp(f"metering-{request.param}")
    config = tmp / "earshot.yaml"
    config.write_text(CATALOG)
    with fresh_database(request.param, tmp) as url:
        env = {"EARSHOT_DATABASE_URL": url, "EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN, "EARSHOT_CONFIG": str(config)}
        # The broken model never loads, so /readyz stays 503: wait for the working model instead.
        server = start_server(tmp, env, wait_for="/healthz")
        try:
            wait_until(lambda: httpx.get(f"{server.base_url}/readyz").json()["engines"]["english"], 30)
            yield server, url
        finally:
            stop_server(server)


def records_of(url: str, key_id: str, expected: int) -> list:  # type: ignore[type-arg]
    """The key's usage records, once `expected` of them are written."""
    wait_until(lambda: len([r for r in usage_records(url) if r.key_id == key_id]) >= expected, 10, 0.1)
    return [record for record in usage_records(url) if record.key_id == key_id]


def test_a_normal_request_leaves_one_ok_record_priced_by_the_minute(
    metered: tuple[RunningServer, str], short_wav: bytes
) -> None:
    server, url = metered
    admin = Admin(server)
    key_id, key = admin.create_key(credits_seconds=10)
    response = transcribe_request(server, short_wav, key, model="english")
    assert response.status_code == 200
    [record] = records_of(url, key_id, 1)
    assert record.outcome == "ok"
    assert record.audio_ms == SHORT_CLIP_MS
    assert record.model == "english" and record.route == "openai.transcriptions"
    assert (record.quantity, record.unit, record.cost) == (1.0, "minute", 0.006)
    assert record.ended_at is not None and record.ended_at >= record.started_at
    assert admin.key(key_id)["credits_seconds"] == 10 - SHORT_CLIP_MS / 1000


def test_an_engine_failure_leaves_one_error_record_and_refunds_the_credit(
    metered: tuple[RunningServer, str], short_wav: bytes
) -> None:
    server, url = metered
    admin = Admin(server)
    key_id, key = admin.create_key(credits_seconds=10)
    response = transcribe_request(server, short_wav, key, model="broken")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "engine_error"
    [record] = records_of(url, key_id, 1)
    assert record.outcome == "error"
    assert record.audio_ms == SHORT_CLIP_MS
    assert record.cost == 0 and record.quantity == 0
    assert admin.key(key_id)["credits_seconds"] == 10


def test_a_client_gone_mid_upload_leaves_one_client_closed_record(
    metered: tuple[RunningServer, str], short_wav: bytes
) -> None:
    server, url = metered
    admin = Admin(server)
    key_id, key = admin.create_key(credits_seconds=10)
    address = urlsplit(server.base_url)
    head = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\n"
        f"Host: {address.netloc}\r\n"
        f"Authorization: Bearer {key}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 1000000\r\n\r\n"
        '--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    )
    with socket.create_connection((address.hostname, address.port)) as sock:
        sock.sendall(head.encode() + short_wav[:20_000])
    [record] = records_of(url, key_id, 1)
    assert record.outcome == "client_closed"
    assert record.audio_ms == 0 and record.cost == 0
    assert admin.key(key_id)["credits_seconds"] == 10


def test_a_client_gone_mid_stream_leaves_one_client_closed_record(metered: tuple[RunningServer, str]) -> None:
    server, url = metered
    admin = Admin(server)
    key_id, key = admin.create_key()
    path = shared_audio("faster-whisper/multilingual.mp3")
    with httpx.stream(
        "POST",
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": (path.name, path.read_bytes())},
        data={"model": "english", "stream": "true"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        first = next(line for line in response.iter_lines() if line.startswith("data:"))
        assert "transcript.text.delta" in first
    [record] = records_of(url, key_id, 1)
    assert record.outcome == "client_closed"
    assert record.audio_ms == pytest.approx(59_900, abs=200)


def test_fifty_concurrent_requests_with_credit_for_twenty_leave_twenty_ok_and_a_zero_balance(
    metered: tuple[RunningServer, str], short_wav: bytes
) -> None:
    server, url = metered
    admin = Admin(server)
    key_id, key = admin.create_key(credits_seconds=20 * SHORT_CLIP_MS / 1000)
    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(lambda _: transcribe_request(server, short_wav, key).status_code, range(50)))
    assert statuses.count(200) == 20
    assert statuses.count(429) == 30
    records = records_of(url, key_id, 50)
    assert len(records) == 50
    assert [r.outcome for r in records].count("ok") == 20
    assert [r.outcome for r in records].count("rejected") == 30
    assert len({r.id for r in records}) == 50
    assert admin.key(key_id)["credits_seconds"] == 0
