"""A live session's final text is a function of its audio alone: not of chunk sizes, pace or machine load.

One speech clip with pauses inside its sentences (so every session cuts it into several phrases) is streamed
over each live protocol in 1, 37 and 250 ms chunks at four times real-time pace and in 100 ms chunks at
real-time pace, all twelve sessions at once, and again (at real-time pace, and at 4x) while two busy
processes load every core. Each protocol's finals must be the same in every run. They are compared within a
protocol: /v1/realtime hears the clip resampled to 24 kHz and back, which may legitimately change a word
against the 16 kHz paths.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from earshot.audio.pcm import Audio
from earshot.engines.provider_io import wav_bytes
from earshot.routing.catalog import DEFAULT_MODEL_ID, EMBEDDED_MODELS
from tests.conftest import RunningServer, start_server, stop_server
from tests.e2e.catalogs import write_catalog
from tests.e2e.live_paths import deepgram_session, managed_session, realtime_session
from tests.e2e.realtime_client import silence, speech

CLIP = "jfk/jfk.flac"
LiveSession = Callable[[str, np.ndarray, int, float | None], Awaitable[str]]
PROTOCOLS: dict[str, tuple[str, LiveSession]] = {
    "deepgram": ("/v1/listen?encoding=linear16&sample_rate=16000&interim_results=true", deepgram_session),
    "realtime": ("/v1/realtime?intent=transcription", realtime_session),
    "managed": ("/ws/transcribe", managed_session),
}


@dataclass(frozen=True)
class Run:
    """How a client streams the clip: chunk size and pace (times real time)."""

    chunk_ms: int
    speed: float

    def __str__(self) -> str:
        return f"{self.chunk_ms} ms chunks at {self.speed:g}x"


# Every chunk size at 4x and real-time pace on a machine only as busy as it is, then real-time pace and the
# largest chunks at 4x with every core loaded: each protocol runs six sessions, each set all at once.
QUIET_RUNS = [Run(1, 4.0), Run(37, 4.0), Run(250, 4.0), Run(100, 1.0)]
LOADED_RUNS = [Run(37, 1.0), Run(250, 4.0)]
BUSY_PROCESSES = 2


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("live-determinism")
    # Room for every session the test runs at once: the capacity a busy test machine measures at start-up is
    # small, and what is checked here is the text, not the capacity.
    models = {model_id: spec.model_dump(exclude_defaults=True) for model_id, spec in EMBEDDED_MODELS.items()}
    models[DEFAULT_MODEL_ID]["max_live_sessions"] = len(PROTOCOLS) * len(QUIET_RUNS)
    catalog = write_catalog(tmp / "catalog.yaml", models, default_model=DEFAULT_MODEL_ID)
    server = start_server(tmp, {"EARSHOT_CONFIG": str(catalog)})
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """The clip and a second of silence, so its last turn ends."""
    return np.concatenate([speech(CLIP), silence(1.0)])


async def finals_of(server: RunningServer, samples: np.ndarray, runs: list[Run]) -> dict[str, list[str]]:
    """Each protocol's final text for each run, every session at once."""
    ws = server.base_url.replace("http://", "ws://")
    sessions = [
        session(f"{ws}{path}", samples, run.chunk_ms, run.speed)
        for path, session in PROTOCOLS.values()
        for run in runs
    ]
    texts = iter(await asyncio.gather(*sessions))
    return {protocol: [next(texts) for _ in runs] for protocol in PROTOCOLS}


@pytest.fixture(scope="module")
async def quiet_finals(live_server: RunningServer, clip: np.ndarray) -> dict[str, list[str]]:
    return await finals_of(live_server, clip, QUIET_RUNS)


def assert_same_finals(label: str, runs: list[Run], texts: list[str], reference: str) -> None:
    print(f"\n{label}: {reference!r}")
    assert reference, f"{label} gives final text"
    for run, text in zip(runs, texts, strict=True):
        assert text == reference, f"{label}, {run}"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_finals_are_the_same_at_any_chunk_size_and_pace(
    quiet_finals: dict[str, list[str]], protocol: str
) -> None:
    texts = quiet_finals[protocol]
    assert_same_finals(protocol, QUIET_RUNS, texts, texts[0])


def busy_processes() -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(BUSY_PROCESSES)]


async def test_finals_are_the_same_while_every_core_is_busy(
    live_server: RunningServer, clip: np.ndarray, quiet_finals: dict[str, list[str]]
) -> None:
    busy = busy_processes()
    try:
        loaded = await finals_of(live_server, clip, LOADED_RUNS)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    for protocol, texts in loaded.items():
        assert_same_finals(f"{protocol} under load", LOADED_RUNS, texts, quiet_finals[protocol][0])


def test_one_shot_text_of_the_same_audio(
    live_server: RunningServer, clip: np.ndarray, quiet_finals: dict[str, list[str]]
) -> None:
    """Not a bound, a record: how each protocol's finals compare with the one-shot decode of the clip."""
    response = httpx.post(
        f"{live_server.base_url}/v1/audio/transcriptions",
        files={"file": ("clip.wav", wav_bytes(Audio(clip)))},
        data={"model": "whisper-1"},
        timeout=120,
    )
    assert response.status_code == 200
    one_shot = response.json()["text"]
    print(f"\none-shot: {one_shot!r}")
    for protocol, texts in quiet_finals.items():
        print(f"{protocol}: {texts[0]!r}")
    assert one_shot
