"""Two real servers sharing PostgreSQL and Redis behave as one: revocation, rate limits and dials."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    Admin,
    RunningServer,
    fresh_database,
    shared_store_env,
    transcribe_request,
    two_workers,
    wait_until,
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, RunningServer]]:
    """Two gateway processes on one PostgreSQL database and one Redis."""
    tmp: Path = tmp_path_factory.mktemp("workers")
    with fresh_database("postgresql", tmp) as url, two_workers(tmp, shared_store_env(url)) as workers:
        yield workers


def test_a_key_revoked_through_one_worker_is_refused_by_the_other_within_a_second(
    pair: tuple[RunningServer, RunningServer], short_wav: bytes
) -> None:
    first, second = pair
    admin = Admin(first)
    key_id, key = admin.create_key()
    assert transcribe_request(second, short_wav, key).status_code == 200
    admin.revoke(key_id)
    elapsed = wait_until(lambda: transcribe_request(second, short_wav, key).status_code == 401, 2)
    assert elapsed < 1.0


def test_a_keys_rate_limit_is_shared_by_both_workers(
    pair: tuple[RunningServer, RunningServer], short_wav: bytes
) -> None:
    first, second = pair
    _, key = Admin(first).create_key(rpm=3)
    statuses = [transcribe_request(server, short_wav, key).status_code for server in (first, second, first)]
    assert statuses == [200, 200, 200]
    for server in (second, first):
        limited = transcribe_request(server, short_wav, key)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1


def test_a_session_limit_is_shared_by_both_workers(pair: tuple[RunningServer, RunningServer]) -> None:
    first, second = pair
    _, key = Admin(first).create_key(max_sessions=1)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "multipart/form-data; boundary=b"}
    # An upload in progress on the first worker holds the key's only session slot.
    release = threading.Event()

    def slow() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        release.wait(10)
        yield b"--b--\r\n"

    holder = threading.Thread(
        target=lambda: httpx.post(
            f"{first.base_url}/v1/audio/transcriptions", headers=headers, content=slow(), timeout=30
        )
    )
    holder.start()
    try:
        wait_until(lambda: _sessions(first) == 1, 5)
        busy = httpx.post(
            f"{second.base_url}/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {key}"},
            files={"file": ("a.wav", b"RIFF")},
            timeout=30,
        )
        assert busy.status_code == 429
        assert busy.json()["error"]["code"] == "concurrency_limit_exceeded"
    finally:
        release.set()
        holder.join()


def _sessions(server: RunningServer) -> int:
    text = httpx.get(f"{server.base_url}/metrics").text
    line = next(line for line in text.splitlines() if line.startswith("earshot_active_sessions "))
    return int(float(line.split()[1]))


def test_a_dial_changed_through_one_worker_applies_to_both(
    pair: tuple[RunningServer, RunningServer], short_wav: bytes
) -> None:
    first, second = pair
    _, key = Admin(first).create_key()
    admin_second = Admin(second)
    assert Admin(first).http.put("/admin/settings", json={"max_upload_bytes": 2000}).status_code == 200
    try:
        elapsed = wait_until(
            lambda: admin_second.http.get("/admin/settings").json()["max_upload_bytes"] == 2000, 2
        )
        assert elapsed < 1.0
        assert transcribe_request(second, short_wav, key).status_code == 413
    finally:
        assert (
            Admin(first).http.put("/admin/settings", json={"max_upload_bytes": 26214400}).status_code == 200
        )
    wait_until(lambda: transcribe_request(second, short_wav, key).status_code == 200, 2)


def _upload_limit(admin: Admin) -> int:
    limit: int = admin.http.get("/admin/settings").json()["max_upload_bytes"]
    return limit
