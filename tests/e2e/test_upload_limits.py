"""Uploads are refused as soon as they pass the limit, without the server holding them in memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import RunningServer, start_server, stop_server

CHUNK = b"\0" * (1024 * 1024)
BOUNDARY = "earshot-test-boundary"


@pytest.fixture(scope="module")
def small_limit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("limits"), {"EARSHOT_MAX_UPLOAD_BYTES": str(10 * 1024 * 1024)}
    )
    yield running
    stop_server(running)


def _tree_rss(pid: int) -> int:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


def _multipart_stream(total_bytes: int, sent: list[int]) -> Iterator[bytes]:
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="huge.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    while sent[0] < total_bytes:
        sent[0] += len(CHUNK)
        yield CHUNK
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def test_chunked_200_mb_upload_is_refused_early_with_bounded_memory(
    small_limit_server: RunningServer,
) -> None:
    rss_before = _tree_rss(small_limit_server.process.pid)
    sent = [0]
    try:
        response = httpx.post(
            f"{small_limit_server.base_url}/v1/audio/transcriptions",
            content=_multipart_stream(200 * 1024 * 1024, sent),
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            timeout=60,
        )
    except httpx.TransportError:
        # The server may answer 413 and close before the client finishes sending; that is a refusal too.
        response = None
    rss_growth = _tree_rss(small_limit_server.process.pid) - rss_before
    if response is not None:
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
    assert rss_growth < 50 * 1024 * 1024, f"server grew by {rss_growth / 2**20:.0f} MiB"
    assert httpx.get(f"{small_limit_server.base_url}/healthz").status_code == 200


def test_declared_oversize_is_refused_before_reading(
    small_limit_server: RunningServer, tmp_path: Path
) -> None:
    body = b"x" * (11 * 1024 * 1024)
    response = httpx.post(
        f"{small_limit_server.base_url}/v1/audio/transcriptions",
        files={"file": ("big.wav", body)},
        timeout=60,
    )
    assert response.status_code == 413
    assert "10485760" in response.json()["error"]["message"]
