"""A server started with a catalog file serves its models, aliases and capabilities as configured."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import RunningServer, shared_audio, start_server, stop_server

CATALOG = """
default_model: english
aliases:
  gpt-4o-mini-transcribe: english
models:
  english:
    engine: pocketsphinx
  batch-only:
    engine: pocketsphinx
    capabilities: [transcribe]
"""


@pytest.fixture(scope="module")
def configured_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("catalog")
    config = tmp / "earshot.yaml"
    config.write_text(CATALOG)
    running = start_server(tmp, {"EARSHOT_CONFIG": str(config)})
    yield running
    stop_server(running)


def _transcribe(server: RunningServer, **fields: str) -> httpx.Response:
    clip = shared_audio("pocketsphinx-testdata/goforward.wav").read_bytes()
    return httpx.post(
        f"{server.base_url}/v1/audio/transcriptions", files={"file": ("a.wav", clip)}, data=fields, timeout=60
    )


def test_models_aliases_and_whisper_1_follow_the_file(configured_server: RunningServer) -> None:
    ids = [m["id"] for m in httpx.get(f"{configured_server.base_url}/v1/models").json()["data"]]
    # The file's models and aliases, then OpenAI's other names for the default model; then the embedded
    # synthesis model (the file has no speech_models) and OpenAI's synthesis names for it.
    assert ids == [
        "english",
        "batch-only",
        "gpt-4o-mini-transcribe",
        "whisper-1",
        "gpt-4o-transcribe",
        "gpt-transcribe",
        "gpt-realtime-whisper",
        "espeak",
        "tts-1",
        "tts-1-hd",
        "gpt-4o-mini-tts",
    ]
    for model in ("gpt-4o-mini-transcribe", "whisper-1", "batch-only"):
        response = _transcribe(configured_server, model=model)
        assert response.json()["text"] == "go forward ten meters", model


def test_a_model_without_stream_capability_refuses_stream(configured_server: RunningServer) -> None:
    response = _transcribe(configured_server, model="batch-only", stream="true")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_model"


def test_language_is_checked_against_the_engine(configured_server: RunningServer) -> None:
    assert _transcribe(configured_server, language="en_US").status_code == 200
    refused = _transcribe(configured_server, language="de")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unsupported_language"
