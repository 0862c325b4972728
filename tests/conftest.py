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
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from earshot.engines.base import Engine
from earshot.engines.workers import WorkerPool
from earshot.routing.catalog import Catalog
from earshot.routing.router import Router
from earshot.store.records import UsageRecord

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
        # One gateway process unless a test asks for `--workers N`.
        "EARSHOT_WORKERS": "1",
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


def shared_store_env(database_url: str) -> dict[str, str]:
    """The environment of gateway processes sharing one database and one Redis, one engine worker each."""
    return {
        "EARSHOT_DATABASE_URL": database_url,
        "EARSHOT_REDIS_URL": REDIS_URL,
        "EARSHOT_REDIS_PREFIX": redis_prefix(),
        "EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN,
        "EARSHOT_ENGINE_WORKERS": "1",
    }


@contextmanager
def two_workers(tmp_dir: Path, env: dict[str, str]) -> Iterator[tuple[RunningServer, RunningServer]]:
    """Two gateway processes started with `env`, stopped after."""
    first = start_server(tmp_dir, env)
    try:
        second = start_server(tmp_dir, env)
        try:
            yield first, second
        finally:
            stop_server(second)
    finally:
        stop_server(first)


@pytest.fixture(scope="session", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """An earshot server with a 90 s audio limit on each backend: every test using it runs on both."""
    tmp = tmp_path_factory.mktemp(f"server-{request.param}")
    with fresh_database(request.param, tmp) as url:
        running = start_server(tmp, {"EARSHOT_MAX_AUDIO_SECONDS": "90", "EARSHOT_DATABASE_URL": url})
        try:
            yield running
        finally:
            stop_server(running)


@pytest.fixture(scope="session")
async def embedded_router() -> AsyncIterator[Router]:
    """The embedded catalog's engines, in-process, with their own worker pool."""
    pool = WorkerPool(2)
    router = Router(Catalog.embedded(), pool)
    await router.start()
    yield router
    await router.stop()
    pool.shutdown()


@pytest.fixture(scope="session")
def engine(embedded_router: Router) -> Engine:
    """The embedded pocketsphinx engine."""
    return embedded_router.route("pocketsphinx").engine


@pytest.fixture(scope="session")
def default_engine(embedded_router: Router) -> Engine:
    """The embedded default engine (Whisper tiny.en)."""
    return embedded_router.route(None).engine


ADMIN_TOKEN = "test-admin-token-0123456789"
SHORT_CLIP_MS = 1500


@pytest.fixture(scope="session")
def short_wav() -> bytes:
    """Exactly 1.5 s of real speech as a 16 kHz PCM16 WAV (so its metered length is known to the ms)."""
    from earshot.audio.decode import decode_audio
    from earshot.engines.provider_io import wav_bytes

    audio = decode_audio(shared_audio("pocketsphinx-testdata/goforward.wav").read_bytes())
    return wav_bytes(audio.slice(0.0, SHORT_CLIP_MS / 1000))


class Admin:
    """The admin API of a running server."""

    def __init__(self, server: RunningServer) -> None:
        self.http = httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        )

    def create_key(self, **fields: object) -> tuple[str, str]:
        """(key id, plaintext) of a new key with the given settings."""
        response = self.http.post("/admin/keys", json={"name": "test", **fields})
        assert response.status_code == 201, response.text
        body = response.json()
        return body["id"], body["key"]

    def revoke(self, key_id: str) -> None:
        assert self.http.post(f"/admin/keys/{key_id}/revoke").status_code == 200

    def key(self, key_id: str) -> dict[str, object]:
        response = self.http.get(f"/admin/keys/{key_id}")
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body


def transcribe_request(server: RunningServer, wav: bytes, key: str | None, **fields: str) -> httpx.Response:
    """POST /v1/audio/transcriptions with a WAV and an optional Bearer key."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": ("clip.wav", wav, "audio/wav")},
        data={"model": "whisper-1", **fields},
        headers=headers,
        timeout=60,
    )


def one_shot_text(server: RunningServer, relpath: str, model: str) -> str:
    """The text `POST /v1/audio/transcriptions` gives a clip of ../shared/audio, asked for as `model`."""
    response = httpx.post(
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": (Path(relpath).name, shared_audio(relpath).read_bytes(), "audio/wav")},
        data={"model": model},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    text: str = response.json()["text"]
    return text


@dataclass(frozen=True, slots=True)
class StreamedDeltas:
    """What a streamed `/v1/audio/transcriptions` sent: each delta with its arrival time, and the text."""

    deltas: list[tuple[float, str]]
    done_text: str | None
    done_at_s: float


def streamed_deltas(client: openai.OpenAI, relpath: str) -> StreamedDeltas:
    """Stream a clip of ../shared/audio with the openai SDK's `stream=True`, timing each event's arrival."""
    started = time.monotonic()
    stream = client.audio.transcriptions.create(model="whisper-1", file=shared_audio(relpath), stream=True)
    deltas: list[tuple[float, str]] = []
    done_text, done_at_s = None, 0.0
    for event in stream:
        if event.type == "transcript.text.delta":
            deltas.append((time.monotonic() - started, event.delta))
        elif event.type == "transcript.text.done":
            done_text, done_at_s = event.text, time.monotonic() - started
    return StreamedDeltas(deltas, done_text, done_at_s)


def usage_records(database_url: str) -> list[UsageRecord]:
    """Every usage record in an earshot database, oldest first."""
    from earshot.store.db import Database
    from earshot.store.repositories import UsageRepository

    async def read() -> list[UsageRecord]:
        db = Database(database_url)
        try:
            return await UsageRepository(db).records(limit=100_000)
        finally:
            await db.dispose()

    return asyncio.run(read())


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> float:
    """Seconds until `predicate()` held; fails the test after `timeout_s`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)
    return time.monotonic() - started
