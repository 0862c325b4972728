"""No text from no speech: silence, noise, music and a recording of nothing give empty transcripts everywhere.

Whisper invents words on such audio ("Thank you.", "Woohoo!"); the VAD in front of the decoder keeps it from
ever hearing them, on the one-shot, SSE and every live path.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.provider_io import wav_bytes
from tests.conftest import RunningServer, shared_audio, start_server, stop_server
from tests.e2e.live_paths import deepgram_session, managed_session, realtime_session


def _music(seconds: float) -> np.ndarray:
    """A melody of harmonic notes with a soft attack and decay, like a simple instrument."""
    t = np.arange(int(ENGINE_RATE_HZ * 0.5)) / ENGINE_RATE_HZ
    envelope = np.minimum(1.0, t / 0.02) * np.exp(-3 * t)
    notes = []
    for index in range(int(seconds / 0.5)):
        pitch = 220.0 * 2 ** ((index * 5 % 12) / 12)
        notes.append(sum(np.sin(2 * np.pi * pitch * k * t) / k for k in (1, 2, 3)) * envelope * 0.2)
    return np.concatenate(notes).astype(np.float32)


def _no_speech() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(12)
    white = rng.standard_normal(ENGINE_RATE_HZ * 6) * 0.1
    brown = np.cumsum(rng.standard_normal(ENGINE_RATE_HZ * 6))
    return {
        "silence": np.zeros(ENGINE_RATE_HZ * 6, np.float32),
        "white noise": white.astype(np.float32),
        "brown noise": (brown / np.abs(brown).max() * 0.3).astype(np.float32),
        "music": _music(6.0),
    }


CASES = [*_no_speech(), "recorded nothing"]


@pytest.fixture(scope="module")
def quiet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("no-speech"))
    try:
        yield server
    finally:
        stop_server(server)


def samples_of(case: str) -> np.ndarray:
    if case == "recorded nothing":
        # The shared clip whose expected transcript is empty (Picovoice's silence test, with room noise).
        return decode_audio(shared_audio("negative/picovoice_empty.wav").read_bytes()).samples
    return _no_speech()[case]


@pytest.mark.parametrize("case", CASES)
def test_one_shot_and_sse_give_empty_text(quiet_server: RunningServer, case: str) -> None:
    body = wav_bytes(Audio(samples_of(case)))
    url = f"{quiet_server.base_url}/v1/audio/transcriptions"
    response = httpx.post(url, files={"file": ("a.wav", body)}, data={"model": "whisper-1"}, timeout=60)
    assert response.status_code == 200 and response.json()["text"] == ""
    streamed = httpx.post(
        url, files={"file": ("a.wav", body)}, data={"model": "whisper-1", "stream": "true"}, timeout=60
    )
    assert streamed.status_code == 200
    assert "transcript.text.delta" not in streamed.text
    assert '"text":""' in streamed.text.replace(" ", "")


@pytest.mark.parametrize("case", CASES)
async def test_live_paths_give_no_final_text(quiet_server: RunningServer, case: str) -> None:
    ws = quiet_server.base_url.replace("http://", "ws://")
    samples = np.concatenate([samples_of(case), np.zeros(ENGINE_RATE_HZ, np.float32)])
    assert await realtime_session(f"{ws}/v1/realtime?intent=transcription", samples) == ""
    listen = f"{ws}/v1/listen?encoding=linear16&sample_rate=16000&interim_results=true"
    assert await deepgram_session(listen, samples) == ""
    assert await managed_session(f"{ws}/ws/transcribe", samples) == ""
