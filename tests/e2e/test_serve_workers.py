"""`earshot serve --workers 2` on SQLite and on PostgreSQL: two processes on one port act as one gateway."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    ADMIN_TOKEN,
    BACKENDS,
    REDIS_URL,
    Admin,
    RunningServer,
    fresh_database,
    redis_prefix,
    sqlite_url,
    start_server,
    stop_server,
    transcribe_request,
    usage_records,
    wait_until,
)
from tests.e2e.session_end import until_closed
from tests.e2e.test_realtime_faults import connect, errors, stream

BURST = 12


@pytest.fixture(scope="module", params=BACKENDS)
def workers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, str]]:
    """(server, database URL) of `earshot serve --workers 2`, one engine worker each, sharing Redis."""
    tmp: Path = tmp_path_factory.mktemp(f"serve-workers-{request.param}")
    with fresh_database(request.param, tmp) as url:
        env = {
            "EARSHOT_DATABASE_URL": url,
            "EARSHOT_REDIS_URL": REDIS_URL,
            "EARSHOT_REDIS_PREFIX": redis_prefix(),
            "EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN,
            "EARSHOT_ENGINE_WORKERS": "2",
        }
        running = start_server(tmp, env, "--workers", "2")
        try:
            # start_server saw one worker ready; the other loads its engines at the same time.
            wait_until(lambda: len(_ready_pids(running)) == 2, 60)
            yield running, url
        finally:
            stop_server(running)


def _ready_pids(server: RunningServer) -> set[str]:
    return set(re.findall(r"\[(\d+)\] earshot\.app earshot \S+ ready: ", server.log_text()))


def _answering_pids(server: RunningServer, key_id: str) -> set[str]:
    """The worker processes whose access log lines name this key."""
    return set(re.findall(rf"\[(\d+)\] earshot\.access request .* key={key_id} ", server.log_text()))


def _burst(server: RunningServer, wav: bytes, key: str) -> list[int]:
    with ThreadPoolExecutor(BURST) as threads:
        return list(threads.map(lambda _: transcribe_request(server, wav, key).status_code, range(BURST)))


def test_concurrent_requests_are_served_by_both_workers_with_one_usage_record_each(
    workers: tuple[RunningServer, str], short_wav: bytes
) -> None:
    server, url = workers
    key_id, key = Admin(server).create_key()
    statuses: list[int] = []
    # The kernel hands each connection to whichever worker accepts first; a few bursts reach both.
    while len(_answering_pids(server, key_id)) < 2 and len(statuses) < 8 * BURST:
        statuses += _burst(server, short_wav, key)
    assert set(statuses) == {200}
    assert len(_answering_pids(server, key_id)) == 2
    records = [record for record in usage_records(url) if record.key_id == key_id]
    assert len(records) == len(statuses)
    assert len({record.id for record in records}) == len(records)
    assert all(record.outcome is not None and record.audio_ms == 1500 for record in records)


def test_a_keys_rate_limit_holds_across_both_workers(
    workers: tuple[RunningServer, str], short_wav: bytes
) -> None:
    server, _ = workers
    key_id, key = Admin(server).create_key(rpm=5)
    statuses = _burst(server, short_wav, key) + _burst(server, short_wav, key)
    assert sorted(statuses) == [200] * 5 + [429] * (2 * BURST - 5)
    assert len(_answering_pids(server, key_id)) == 2


def test_the_workers_share_out_the_engine_processes(workers: tuple[RunningServer, str]) -> None:
    server, _ = workers
    # EARSHOT_ENGINE_WORKERS=2 over two gateway workers: one engine process each, so each measures its own.
    measured = re.findall(
        r"\[(\d+)\] earshot\.engines\.faster_whisper model whisper-tiny\.en: (.*)", server.log_text()
    )
    assert len({pid for pid, _ in measured}) == 2
    assert all("a decode takes" in line and "on a worker" in line for _, line in measured)
    assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200


def test_several_workers_without_redis_are_refused_at_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "earshot", "serve", "--workers", "2", "--port", "1"],
        env={
            **{name: value for name, value in os.environ.items() if not name.startswith("EARSHOT_")},
            "EARSHOT_DATABASE_URL": f"sqlite:///{tmp_path / 'e.db'}",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--workers 2 needs EARSHOT_REDIS_URL" in result.stderr


def test_a_killed_worker_is_replaced_and_sigterm_lets_a_live_session_finish(tmp_path: Path) -> None:
    async def stream_until_shutdown(server: RunningServer, key: str) -> list[int]:
        # One session: a worker admits what its one engine worker carries (one live session on a slow box).
        sessions = [await connect(server, key)]
        sent_ms = await asyncio.gather(*(stream(ws, 1.0) for ws in sessions))
        await asyncio.sleep(0.3)
        server.process.terminate()
        for ws in sessions:
            events, code = await until_closed(ws)
            assert errors(events) == ["server_shutting_down"]
            completed = [
                e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"
            ]
            assert completed and completed[-1]["transcript"], "the open turn is transcribed before the close"
            assert code == 1012
        return list(sent_ms)

    env = {
        "EARSHOT_REDIS_URL": REDIS_URL,
        "EARSHOT_REDIS_PREFIX": redis_prefix(),
        "EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    server = start_server(tmp_path, env, "--workers", "2")
    try:
        wait_until(lambda: len(_ready_pids(server)) == 2, 60)
        killed = min(_ready_pids(server))
        os.kill(int(killed), signal.SIGKILL)
        wait_until(lambda: len(_ready_pids(server)) == 3, 60)
        assert f"earshot worker [{killed}] died (exit -9); starting another" in server.log_text()
        key_id, key = Admin(server).create_key()
        sent_ms = asyncio.run(stream_until_shutdown(server, key))
        assert server.process.wait(timeout=30) == 0
    finally:
        stop_server(server)
    records = [record for record in usage_records(sqlite_url(tmp_path)) if record.key_id == key_id]
    assert sorted((r.outcome, r.audio_ms) for r in records) == sorted(("shutdown", ms) for ms in sent_ms)
    assert "Traceback" not in server.log_text()
    assert "supervisor" in server.log_text() and ": stopped" in server.log_text()
