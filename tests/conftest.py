"""Shared fixtures: the recorded speech in ../shared/audio, a real earshot server, an in-process engine."""

from __future__ import annotations

import asyncio
import csv
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from earshot.engines.base import Engine
from earshot.engines.workers import WorkerPool
from earshot.routing.catalog import Catalog
from earshot.routing.router import Router

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_AUDIO = REPO_ROOT.parent / "shared" / "audio"


@dataclass(frozen=True)
class Clip:
    """One recorded clip from ../shared/audio/INDEX.tsv."""

    path: Path
    duration_s: float
    transcript: str


def _clips() -> list[Clip]:
    index = SHARED_AUDIO / "INDEX.tsv"
    if not index.exists():
        return []
    with index.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [
        Clip(SHARED_AUDIO / row["relpath"], float(row["duration_seconds"]), row["transcript"]) for row in rows
    ]


ALL_CLIPS = _clips()
# English speech with an exact single-speaker transcript (the stereo clip has one speaker per channel).
ENGLISH_CLIPS = [clip for clip in ALL_CLIPS if clip.transcript and not clip.transcript.startswith("LEFT:")]


def shared_audio(relpath: str) -> Path:
    """A file under ../shared/audio, or skip the test when the shared folder is absent."""
    path = SHARED_AUDIO / relpath
    if not path.exists():
        pytest.skip(f"../shared/audio/{relpath} is absent (the shared audio folder sits beside the repo)")
    return path


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningServer:
    """A real `earshot serve` subprocess."""

    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        """Everything the server has logged so far."""
        return self.log_path.read_text(errors="replace")


def start_server(
    tmp_dir: Path, extra_env: dict[str, str] | None = None, *args: str, wait_for: str = "/readyz"
) -> RunningServer:
    """Start `earshot serve` on a free port and wait until `wait_for` answers 200 (engines loaded).

    The database is a fresh SQLite file in `tmp_dir` unless `extra_env` names another.
    """
    port = free_port()
    log_path = tmp_dir / f"server-{port}.log"
    env = {
        **os.environ,
        "EARSHOT_ENGINE_WORKERS": "2",
        "EARSHOT_DATABASE_URL": sqlite_url(tmp_dir),
        **(extra_env or {}),
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "earshot", "serve", "--port", str(port), *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = RunningServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"earshot serve exited early:\n{server.log_text()}")
        try:
            if httpx.get(f"{server.base_url}{wait_for}", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"earshot serve was not ready within 60 s:\n{server.log_text()}")


def stop_server(server: RunningServer) -> None:
    """Stop a server started by `start_server`."""
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def sqlite_url(directory: Path) -> str:
    """An earshot database URL for a SQLite file in `directory`."""
    return f"sqlite+aiosqlite:///{directory / 'earshot.db'}"


POSTGRES_URL = os.environ.get("EARSHOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("EARSHOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _postgres_admin() -> tuple[str, str]:
    """(libpq URL of the admin database, host part to build sibling database URLs)."""
    url = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
    return url, url.rsplit("/", 1)[0]


def create_postgres_database() -> str:
    """A fresh, empty PostgreSQL database; returns its earshot (asyncpg) URL."""
    import asyncpg

    admin_url, base = _postgres_admin()
    name = f"earshot_test_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    try:
        asyncio.run(create())
    except (OSError, asyncpg.PostgresError) as e:
        pytest.fail(f"PostgreSQL at {admin_url} is needed for this test and is unreachable: {e}")
    return f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"


def drop_postgres_database(url: str) -> None:
    """Drop a database made by create_postgres_database, closing its connections."""
    import asyncpg

    admin_url, _ = _postgres_admin()
    name = url.rsplit("/", 1)[1]

    async def drop() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


BACKENDS = ["sqlite", "postgresql"]


@contextmanager
def fresh_database(backend: str, tmp_dir: Path) -> Iterator[str]:
    """The URL of a new, empty earshot database on `backend` (sqlite or postgresql), dropped after."""
    if backend == "sqlite":
        yield sqlite_url(tmp_dir)
        return
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh earshot database URL on each backend: a SQLite file, then a new PostgreSQL database."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


def redis_prefix() -> str:
    """A Redis key prefix no other test uses."""
    return f"earshot-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One earshot server for the session, with a 90 s audio limit."""
    running = start_server(tmp_path_factory.mktemp("server"), {"EARSHOT_MAX_AUDIO_SECONDS": "90"})
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
async def engine() -> AsyncIterator[Engine]:
    """The embedded default engine, in-process, with its own worker pool."""
    pool = WorkerPool(2)
    router = Router(Catalog.embedded(), pool)
    await router.start()
    yield router.route(None).engine
    await router.stop()
    pool.shutdown()
