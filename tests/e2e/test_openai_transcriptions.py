"""The official openai SDK against a real earshot server: formats, streaming, errors."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from tests.conftest import RunningServer, shared_audio, streamed_deltas, wait_until

SRT_CUE = re.compile(r"^(\d+)\n(\d{2}:\d{2}:\d{2},\d{3}) --> (\d{2}:\d{2}:\d{2},\d{3})\n(.+)$")


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def test_json_is_the_default_and_carries_usage(client: openai.OpenAI) -> None:
    with shared_audio("pocketsphinx-testdata/goforward.wav").open("rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert result.text == "Go forward 10 meters."
    assert result.usage is not None and result.usage.type == "duration"
    assert result.usage.seconds == pytest.approx(2.786, abs=0.01)


def test_every_text_format_carries_the_same_words(client: openai.OpenAI) -> None:
    path = shared_audio("jfk/jfk.flac")
    json_text = client.audio.transcriptions.create(model="whisper-1", file=path).text
    text = client.audio.transcriptions.create(model="whisper-1", file=path, response_format="text")
    srt = client.audio.transcriptions.create(model="whisper-1", file=path, response_format="srt")
    vtt = client.audio.transcriptions.create(model="whisper-1", file=path, response_format="vtt")
    assert json_text and text.strip() == json_text

    cues = [SRT_CUE.match(block) for block in srt.strip().split("\n\n")]
    assert all(cues), srt
    assert [int(cue[1]) for cue in cues if cue] == list(range(1, len(cues) + 1))
    assert " ".join(cue[4] for cue in cues if cue) == json_text

    assert vtt.startswith("WEBVTT\n\n")
    assert " ".join(line for line in vtt.splitlines()[2:] if line and "-->" not in line) == json_text


def test_verbose_json_words_and_segments(client: openai.OpenAI) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1",
        file=shared_audio("jfk/jfk.flac"),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert result.language == "english"
    assert result.duration == pytest.approx(11.0, abs=0.05)
    assert result.segments and result.words
    assert " ".join(word.word for word in result.words) == result.text
    starts = [word.start for word in result.words]
    assert starts == sorted(starts)
    assert all(0 <= word.start < word.end <= result.duration for word in result.words)
    assert " ".join(segment.text for segment in result.segments) == result.text


def test_verbose_json_without_granularities_has_segments_only(client: openai.OpenAI) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1",
        file=shared_audio("pocketsphinx-testdata/goforward.wav"),
        response_format="verbose_json",
    )
    assert result.segments and result.words is None


def test_stream_sends_deltas_before_decoding_ends(client: openai.OpenAI) -> None:
    streamed = streamed_deltas(client, "faster-whisper/multilingual.mp3")
    assert len(streamed.deltas) >= 2
    assert "".join(delta for _, delta in streamed.deltas) == streamed.done_text
    first_at_s = streamed.deltas[0][0]
    assert first_at_s < streamed.done_at_s - 0.5, (
        "the first delta should arrive well before decoding finishes"
    )


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.audio.transcriptions.create(model="no-such-model", file=shared_audio("fsdd/1_george_0.wav"))
    assert raised.value.code == "model_not_found"


def test_empty_file_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.audio.transcriptions.create(model="whisper-1", file=("empty.wav", b""))
    assert raised.value.code == "empty_file"


def test_garbage_and_truncated_files_are_400_invalid_audio(client: openai.OpenAI) -> None:
    header_only = shared_audio("jfk/jfk.mp3").read_bytes()[:100]
    for name, data in [("noise.mp3", bytes(range(256)) * 64), ("cut.mp3", header_only)]:
        with pytest.raises(openai.BadRequestError) as raised:
            client.audio.transcriptions.create(model="whisper-1", file=(name, data))
        assert raised.value.code in {"invalid_audio", "empty_file"}, name


def test_oversize_upload_is_413(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        client.audio.transcriptions.create(model="whisper-1", file=("big.wav", b"\0" * (26 * 1024 * 1024)))
    assert raised.value.status_code == 413
    assert raised.value.code == "request_too_large"


def test_audio_longer_than_the_limit_is_400(server: RunningServer) -> None:
    silence_wav = _wav_header(120 * 16000 * 2) + b"\0" * (120 * 16000 * 2)  # 120 s, limit is 90 s
    response = httpx.post(
        f"{server.base_url}/v1/audio/transcriptions", files={"file": ("long.wav", silence_wav)}, timeout=30
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "audio_too_long"


def test_missing_file_and_bad_fields_are_400_in_openai_shape(server: RunningServer) -> None:
    url = f"{server.base_url}/v1/audio/transcriptions"
    wav = shared_audio("fsdd/1_george_0.wav").read_bytes()
    cases = [
        ({"files": {"model": (None, "whisper-1")}}, "file"),
        ({"files": {"file": ("a.wav", wav)}, "data": {"response_format": "mp4"}}, "response_format"),
        ({"files": {"file": ("a.wav", wav)}, "data": {"temperature": "hot"}}, "temperature"),
        (
            {"files": {"file": ("a.wav", wav)}, "data": {"timestamp_granularities[]": "word"}},
            "timestamp_granularities",
        ),
    ]
    for kwargs, param in cases:
        response = httpx.post(url, timeout=30, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 400, (param, response.text)
        error = response.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    not_multipart = httpx.post(url, json={"model": "whisper-1"}, timeout=30)
    assert not_multipart.status_code == 400
    assert "multipart/form-data" in not_multipart.json()["error"]["message"]


def test_granularities_accepted_without_brackets(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": ("a.wav", shared_audio("pocketsphinx-testdata/goforward.wav").read_bytes())},
        data={"response_format": "verbose_json", "timestamp_granularities": "word"},
        timeout=30,
    )
    assert response.status_code == 200
    assert [w["word"] for w in response.json()["words"]] == ["Go", "forward", "10", "meters."]


def test_raw_pcm_upload_with_rate_in_content_type(server: RunningServer) -> None:
    from earshot.audio.decode import decode_audio

    pcm = decode_audio(shared_audio("pocketsphinx-testdata/goforward.wav").read_bytes()).pcm16()
    response = httpx.post(
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": ("a.pcm", pcm, "audio/pcm;rate=16000")},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.json()["text"] == "Go forward 10 meters."


def test_models_list_and_lookup(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids[:3] == ["whisper-tiny.en", "pocketsphinx", "whisper-1"]
    assert client.models.retrieve("whisper-1").owned_by == "earshot"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_health_and_readiness(server: RunningServer) -> None:
    assert httpx.get(f"{server.base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.base_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["engines"] == {"whisper-tiny.en": True, "pocketsphinx": True}


def test_every_request_is_logged_once_without_secrets(client: openai.OpenAI, server: RunningServer) -> None:
    marker = "sk-test-secret-do-not-log"
    secret_client = client.with_options(api_key=marker)
    secret_client.audio.transcriptions.create(model="whisper-1", file=shared_audio("fsdd/2_george_0.wav"))

    def logged() -> bool:
        lines = [line for line in server.log_text().splitlines() if "route=/v1/audio/transcriptions" in line]
        return any("status=200" in line and "audio_s=0.330" in line for line in lines)

    # The line is written once the response has gone out, so it can land a moment after the client has it.
    wait_until(logged, 5)
    assert marker not in server.log_text()


def _wav_header(data_bytes: int, rate: int = 16000) -> bytes:
    import struct

    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )
