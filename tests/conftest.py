"""Shared fixtures: the recorded speech in ../shared/audio, a real earshot server, an in-process engine."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
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


def start_server(tmp_dir: Path, extra_env: dict[str, str] | None = None, *args: str) -> RunningServer:
    """Start `earshot serve` on a free port and wait until /readyz says its engines are loaded."""
    port = free_port()
    log_path = tmp_dir / f"server-{port}.log"
    env = {**os.environ, "EARSHOT_ENGINE_WORKERS": "2", **(extra_env or {})}
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
            if httpx.get(f"{server.base_url}/readyz", timeout=1).status_code == 200:
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
