"""POST /v1/audio/speech with the official openai SDK against a real server: espeak-ng by default, in every
format, decoded back and transcribed by the default engine to the input's words; an OpenAI-compatible
provider (the fake) passed through, falling back to espeak-ng when it fails; one usage record per request,
priced per character."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import av
import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI

from tests.conftest import (
    ADMIN_TOKEN,
    Admin,
    RunningServer,
    sqlite_url,
    start_server,
    stop_server,
    usage_records,
    wait_until,
)
from tests.e2e.realtime_client import as_wav
from tests.e2e.wer import words
from tests.fakes.openai import OPENAI_KEY, SECRET_MARKER, SPEECH_CONTENT_TYPES, FakeOpenAI, speech_tone
from tests.fakes.server import FakeServer, serving

# A sentence Whisper tiny.en hears word for word from every espeak-ng voice earshot maps OpenAI's onto.
SENTENCE = "Please open the door and turn on the light."
PRICE_PER_CHARACTER = 0.000015
UPSTREAM_KEY_ENV = "EARSHOT_TEST_UPSTREAM_TTS_KEY"
CATALOG = """
speech_models:
  espeak:
    engine: espeak
    price: {price}
  relayed-tts:
    engine: openai_compatible
    base_url: {base}/compat/v1
    api_key_env: {env}
    upstream_model: gpt-4o-mini-tts
    fallbacks: [espeak]
  openai-tts:
    engine: openai
    base_url: {base}/v1
    api_key_env: {env}
    upstream_model: tts-1
  relayed-tts-alone:
    engine: openai_compatible
    base_url: {base}/compat/v1
    api_key_env: {env}
    upstream_model: tts-1-hd
    circuit_failures: 100
"""
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


@dataclass
class SpeechSetup:
    fake: FakeOpenAI
    fake_server: FakeServer
    server: RunningServer
    database_url: str
    key: str
    key_id: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpeechSetup]:
    tmp = tmp_path_factory.mktemp("speech")
    fake = FakeOpenAI()
    with serving(fake.app) as fake_server:
        config = tmp / "earshot.yaml"
        config.write_text(
            CATALOG.format(price=PRICE_PER_CHARACTER, base=fake_server.base_url, env=UPSTREAM_KEY_ENV)
        )
        env = {
            "EARSHOT_CONFIG": str(config),
            "EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN,
            UPSTREAM_KEY_ENV: OPENAI_KEY,
        }
        server = start_server(tmp, env)
        try:
            key_id, key = Admin(server).create_key()
            yield SpeechSetup(fake, fake_server, server, sqlite_url(tmp), key, key_id)
        finally:
            stop_server(server)


@pytest.fixture
def client(setup: SpeechSetup) -> OpenAI:
    setup.fake.faults.reset()
    setup.fake.speech_requests.clear()
    setup.fake.speech_cut_after_chunks = None
    return OpenAI(base_url=f"{setup.server.base_url}/v1", api_key=setup.key, max_retries=0)


def decoded(data: bytes) -> tuple[int, float]:
    """(sample rate, seconds) of an encoded file, read back with PyAV."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.rate, samples / stream.rate


def heard(client: OpenAI, data: bytes, fmt: str) -> list[str]:
    """The words the server's default engine (Whisper tiny.en) hears in the audio."""
    upload = as_wav(data) if fmt == "pcm" else data
    return words(client.audio.transcriptions.create(model="whisper-1", file=(f"speech.{fmt}", upload)).text)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_decodes_and_is_heard_as_the_input_words(client: OpenAI, fmt: str) -> None:
    response = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format=fmt)  # type: ignore[arg-type]
    assert response.response.headers["content-type"] == SPEECH_CONTENT_TYPES[fmt]
    data = response.content
    rate_hz, seconds = decoded(as_wav(data) if fmt == "pcm" else data)
    assert 1.0 < seconds < 6.0
    # Ogg Opus always decodes at 48 kHz; every other format carries earshot's 24 kHz as OpenAI's does.
    assert rate_hz == (48_000 if fmt == "opus" else 24_000)
    assert heard(client, data, fmt) == words(SENTENCE)


def test_the_audio_streams_out_as_it_is_synthesized(client: OpenAI) -> None:
    text = f"{SENTENCE} The weather is nice today. We will walk to the park."
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="alloy", input=text, response_format="pcm"
    ) as response:
        assert response.headers.get("transfer-encoding") == "chunked"
        chunks = [chunk for chunk in response.iter_bytes() if chunk]
    assert len(chunks) > 1, "a sentence at a time"
    assert heard(client, b"".join(chunks), "pcm") == words(text)


def test_wav_streams_with_the_placeholder_sizes(client: OpenAI) -> None:
    data = client.audio.speech.create(
        model="tts-1", voice="echo", input=SENTENCE, response_format="wav"
    ).content
    assert data[:4] == b"RIFF" and data[4:8] == b"\xff\xff\xff\xff" and data[40:44] == b"\xff\xff\xff\xff"


def test_a_slower_speed_gives_longer_audio(client: OpenAI) -> None:
    def seconds(speed: float) -> float:
        pcm = client.audio.speech.create(
            model="tts-1", voice="alloy", input=SENTENCE, response_format="pcm", speed=speed
        ).content
        return len(pcm) / 48_000

    slow, normal, fast = seconds(0.5), seconds(1.0), seconds(2.0)
    assert slow > normal * 1.6 and fast < normal * 0.65


def pitch_hz(pcm: bytes, rate_hz: int = 24_000) -> float:
    """The median pitch of the louder half of 40 ms frames of PCM16 speech (autocorrelation, 70-400 Hz)."""
    samples = np.frombuffer(pcm, "<i2").astype(np.float32)
    size = int(0.04 * rate_hz)
    frames = [samples[i : i + size] for i in range(0, len(samples) - size, size)]
    loudness = np.array([np.sum(frame * frame) for frame in frames])
    shortest, longest = rate_hz // 400, rate_hz // 70
    estimates = []
    for frame in (f for f, level in zip(frames, loudness, strict=True) if level > np.median(loudness)):
        centred = frame - frame.mean()
        correlation = np.correlate(centred, centred, "full")[size - 1 :]
        estimates.append(rate_hz / (shortest + int(np.argmax(correlation[shortest:longest]))))
    return float(np.median(estimates))


def test_voices_are_honoured_and_espeak_names_work(client: OpenAI) -> None:
    def pcm(voice: str) -> bytes:
        return client.audio.speech.create(
            model="tts-1",
            voice=voice,  # type: ignore[arg-type]
            input=SENTENCE,
            response_format="pcm",
        ).content

    nova, onyx = pitch_hz(pcm("nova")), pitch_hz(pcm("onyx"))
    assert nova > 1.5 * onyx, "nova speaks as a woman, onyx as a man"
    assert pitch_hz(pcm("en-us+f3")) == pytest.approx(nova, rel=0.1), "nova is espeak-ng's en-us+f3"
    assert heard(client, pcm("en-gb-x-rp"), "pcm") == words(SENTENCE)


def test_an_unknown_voice_is_a_400_naming_the_voices(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", voice="zz-nobody", input=SENTENCE)  # type: ignore[arg-type]
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == "voice" and "alloy" in error["message"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "tts-1", "voice": "alloy", "input": "  "}, 400, "input"),
        ({"model": "tts-1", "voice": "alloy", "input": "a" * 4097}, 400, "input"),
        ({"model": "tts-1", "voice": "alloy"}, 400, "input"),
        ({"model": "tts-1", "input": "hi"}, 400, "voice"),
        (
            {"model": "tts-1", "voice": "alloy", "input": "hi", "response_format": "ogg"},
            400,
            "response_format",
        ),
        ({"model": "tts-1", "voice": "alloy", "input": "hi", "speed": 5}, 400, "speed"),
        ({"model": "tts-9", "voice": "alloy", "input": "hi"}, 404, "model"),
        ({"model": "whisper-1", "voice": "alloy", "input": "hi"}, 404, "model"),
    ],
)
def test_bad_requests_get_openai_errors(
    setup: SpeechSetup, body: dict[str, object], status: int, param: str
) -> None:
    response = httpx.post(
        f"{setup.server.base_url}/v1/audio/speech",
        json=body,
        headers={"Authorization": f"Bearer {setup.key}"},
        timeout=30,
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"
    if param == "response_format":
        assert "mp3, opus, aac, flac, wav, pcm" in error["message"]


def speech_records(setup: SpeechSetup) -> list[object]:
    return [r for r in usage_records(setup.database_url) if r.route == "openai.speech"]


def test_each_request_writes_one_record_priced_per_character(client: OpenAI, setup: SpeechSetup) -> None:
    before = len(speech_records(setup))
    client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format="mp3").read()
    wait_until(lambda: len(speech_records(setup)) == before + 1, 10, 0.1)
    record = usage_records(setup.database_url)[-1]
    assert record.route == "openai.speech" and record.model == "espeak" and record.key_id == setup.key_id
    assert record.unit == "character" and record.quantity == len(SENTENCE) and record.outcome == "ok"
    assert record.cost == pytest.approx(len(SENTENCE) * PRICE_PER_CHARACTER)


def stream_alone_speech(setup: SpeechSetup, fmt: str) -> AbstractContextManager[httpx.Response]:
    """A streamed POST /v1/audio/speech of SENTENCE to the provider that has no fallback."""
    return httpx.stream(
        "POST",
        f"{setup.server.base_url}/v1/audio/speech",
        json={"model": "relayed-tts-alone", "voice": "alloy", "input": SENTENCE, "response_format": fmt},
        headers={"Authorization": f"Bearer {setup.key}"},
        timeout=30,
    )


def test_a_client_leaving_mid_stream_still_writes_one_record(client: OpenAI, setup: SpeechSetup) -> None:
    # A slow provider (a chunk every 0.2 s, 10 s of audio), so the client leaves long before the body ends.
    setup.fake.faults.delay_s = 0.2
    setup.fake.speech_tone_s = 10.0
    before = len(speech_records(setup))
    try:
        with stream_alone_speech(setup, "pcm") as response:
            assert response.status_code == 200
            next(response.iter_bytes())
    finally:
        setup.fake.speech_tone_s = 0.5
    wait_until(lambda: len(speech_records(setup)) == before + 1, 15, 0.1)
    record = usage_records(setup.database_url)[-1]
    assert record.outcome == "client_closed" and record.model == "relayed-tts-alone"
    assert record.quantity == len(SENTENCE), "the whole input is billed"


def test_models_lists_the_synthesis_models_with_the_speech_capability(client: OpenAI) -> None:
    cards = {model.id: model for model in client.models.list()}
    for name in ("espeak", "relayed-tts", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"):
        assert cards[name].capabilities == ["speech"]
    assert cards["tts-1"].alias_of == "espeak"
    assert "speech" not in cards["whisper-1"].capabilities


@pytest.mark.parametrize(
    ("model", "path", "upstream_model"),
    [
        ("relayed-tts", "/compat/v1/audio/speech", "gpt-4o-mini-tts"),
        ("openai-tts", "/v1/audio/speech", "tts-1"),
    ],
)
def test_a_provider_is_streamed_through(
    client: OpenAI, setup: SpeechSetup, model: str, path: str, upstream_model: str
) -> None:
    data = client.audio.speech.create(
        model=model,
        voice="coral",
        input=SENTENCE,
        response_format="wav",
        instructions="Speak warmly.",
        speed=1.25,
    ).content
    assert data == speech_tone("wav", setup.fake.speech_tone_s)
    seen = setup.fake.speech_requests[-1]
    assert seen.path == path and seen.body["model"] == upstream_model and seen.body["voice"] == "coral"
    assert seen.body["instructions"] == "Speak warmly." and seen.body["input"] == SENTENCE
    assert seen.body["speed"] == 1.25 and seen.body["response_format"] == "wav"
    assert seen.headers["authorization"] == f"Bearer {OPENAI_KEY}", "earshot's upstream key, not the caller's"


def test_a_failing_provider_falls_back_to_espeak(client: OpenAI, setup: SpeechSetup) -> None:
    setup.fake.faults.fail_next(503)
    data = client.audio.speech.create(
        model="relayed-tts", voice="alloy", input=SENTENCE, response_format="pcm"
    ).content
    assert setup.fake.speech_requests, "the provider was tried first"
    assert heard(client, data, "pcm") == words(SENTENCE)


def test_a_failing_provider_without_fallback_is_a_502_that_tells_nothing(
    client: OpenAI, setup: SpeechSetup
) -> None:
    setup.fake.faults.fail_next(500)
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.speech.create(model="relayed-tts-alone", voice="alloy", input=SENTENCE)
    assert caught.value.status_code == 502
    shown = caught.value.response.text
    for secret in (SECRET_MARKER, OPENAI_KEY, setup.fake_server.base_url):
        assert secret not in shown
    assert "speech model relayed-tts-alone failed" in setup.server.log_text()


def test_a_keys_model_list_governs_synthesis_too(setup: SpeechSetup) -> None:
    admin = Admin(setup.server)
    _, speaker = admin.create_key(models=["tts-1"])
    _, listener = admin.create_key(models=["whisper-1"])

    def speak(key: str) -> httpx.Response:
        return httpx.post(
            f"{setup.server.base_url}/v1/audio/speech",
            json={"model": "espeak", "voice": "alloy", "input": "hi", "response_format": "pcm"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

    assert speak(speaker).status_code == 200, "tts-1 is a name of espeak"
    refused = speak(listener)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"


def test_a_provider_failing_mid_body_cuts_the_response_and_is_not_billed(
    client: OpenAI, setup: SpeechSetup
) -> None:
    before = len(speech_records(setup))
    setup.fake.speech_cut_after_chunks = 2
    with (
        pytest.raises(httpx.RemoteProtocolError),
        stream_alone_speech(setup, "wav") as response,
    ):
        assert response.status_code == 200
        response.read()
    wait_until(lambda: len(speech_records(setup)) == before + 1, 10, 0.1)
    record = usage_records(setup.database_url)[-1]
    assert record.outcome == "upstream_error" and record.cost == 0
    assert "speech model relayed-tts-alone failed mid-stream" in setup.server.log_text()
