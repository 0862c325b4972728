"""A long upload is never held whole as samples: an hour with two sentences in it is transcribed, by the
default model, while the server's peak memory grows by far less than the hour's 230 MB of float32."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import ENGINE_RATE_HZ, float_to_pcm16
from tests.conftest import RunningServer, shared_audio, start_server, stop_server
from tests.e2e.flac import flac_of

HOUR_S = 3600
# Where the two sentences start, in seconds.
SPEECH_AT_S = (600, 3000)
DECODED_HOUR_MB = HOUR_S * ENGINE_RATE_HZ * 4 / 2**20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("long-uploads")
    running = start_server(tmp, {"EARSHOT_MAX_AUDIO_SECONDS": str(HOUR_S + 60)})
    try:
        yield running
    finally:
        stop_server(running)


def hour_with_speech_flac(sentence: np.ndarray) -> bytes:
    """An hour of FLAC, silent but for `sentence` at each of SPEECH_AT_S."""
    speech = {at: np.frombuffer(float_to_pcm16(sentence), "<i2") for at in SPEECH_AT_S}

    def seconds() -> Iterator[np.ndarray]:
        for second in range(HOUR_S):
            block = np.zeros(ENGINE_RATE_HZ, dtype=np.int16)
            for at, pcm in speech.items():
                if second >= at:
                    part = pcm[(second - at) * ENGINE_RATE_HZ :][:ENGINE_RATE_HZ]
                    block[: len(part)] = part
            yield block

    return flac_of(seconds())


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


def test_an_hour_upload_is_transcribed_without_holding_its_samples(server: RunningServer) -> None:
    sentence = decode_audio(shared_audio("jfk/jfk.flac").read_bytes()).samples
    flac = hour_with_speech_flac(sentence)
    before_mb = peak_rss_mb(server.process.pid)
    answered = httpx.post(
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": ("hour.flac", flac, "audio/flac")},
        data={"model": "whisper-1", "response_format": "verbose_json"},
        timeout=300,
    )
    grown_mb = peak_rss_mb(server.process.pid) - before_mb
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert abs(body["duration"] - HOUR_S) < 1
    starts = [segment["start"] for segment in body["segments"]]
    assert [at for at in SPEECH_AT_S if any(at - 1 <= start <= at + 12 for start in starts)] == list(
        SPEECH_AT_S
    )
    assert body["text"].lower().count("what you can do for your country") == 2
    print(f"\nserver peak RSS grew {grown_mb:.0f} MB for an hour ({DECODED_HOUR_MB:.0f} MB as samples)")
    assert grown_mb < DECODED_HOUR_MB / 3
