"""Speech synthesis without a server: voices, text pieces, encoders, the catalog's speech_models, metering per
character, the fallback chain and the request body's checks."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import pytest

from earshot.accounts.metering import Price
from earshot.api.openai.errors import OpenAIError
from earshot.api.openai.speech import MAX_INPUT_CHARS, SpeechParams
from earshot.audio.encode import SPEECH_RATE_HZ, SpeechEncoder, SpeechFormat, content_type
from earshot.engines.base import UpstreamError
from earshot.routing.breaker import CircuitBreaker
from earshot.routing.catalog import Catalog, CatalogError, ModelNotFound
from earshot.routing.gate import ConcurrencyGate
from earshot.routing.synthesis import SynthesisChain, SynthesisProvider
from earshot.voice.espeak import MAX_WPM, MIN_WPM, NORMAL_WPM, words_per_minute
from earshot.voice.pieces import text_pieces
from earshot.voice.tts import SpeechRequest
from earshot.voice.voices import OPENAI_VOICES, UnknownVoice, espeak_voice
from tests.fakes.openai import SPEECH_VOICES

# --- Voices -----------------------------------------------------------------------------------------


def test_every_openai_voice_maps_onto_an_english_espeak_voice() -> None:
    for name in SPEECH_VOICES:
        assert espeak_voice(name).startswith("en-")
    assert espeak_voice("marin") and espeak_voice("cedar")
    assert espeak_voice("Nova") == OPENAI_VOICES["nova"] == "en-us+f3"
    assert len(set(OPENAI_VOICES.values())) == len(OPENAI_VOICES), "no two OpenAI voices sound the same"


def test_espeak_names_pass_and_nothing_path_like_does() -> None:
    assert espeak_voice("en-gb-x-rp") == "en-gb-x-rp"
    assert espeak_voice("de+m3") == "de+m3"
    for bad in ("../../etc/passwd", "en/../x", "", "a", "en-us+f3+m1", "x" * 60, "en us"):
        with pytest.raises(UnknownVoice, match="alloy"):
            espeak_voice(bad)


def test_speeds_become_espeak_rates_within_what_it_can_speak() -> None:
    assert words_per_minute(1.0) == NORMAL_WPM
    assert words_per_minute(2.0) == 2 * NORMAL_WPM
    assert words_per_minute(0.25) == MIN_WPM and words_per_minute(4.0) == MAX_WPM


# --- Pieces -----------------------------------------------------------------------------------------


def test_text_is_spoken_a_sentence_at_a_time() -> None:
    assert text_pieces("Hello there.  How are you?\nFine!") == ["Hello there.", "How are you?", "Fine!"]
    assert text_pieces("  \n ") == []
    assert text_pieces("e.g. this stays") == ["e.g. this stays"]


def test_a_long_sentence_is_cut_between_words() -> None:
    text = " ".join(["word"] * 200)
    pieces = text_pieces(text, max_chars=50)
    assert all(len(piece) <= 50 for piece in pieces)
    assert " ".join(pieces) == text
    assert text_pieces("x" * 120, max_chars=50) == ["x" * 50, "x" * 50, "x" * 20]


# --- Encoders ---------------------------------------------------------------------------------------


def tone(seconds: float, rate_hz: int) -> np.ndarray:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    return (np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16)


def encode(fmt: SpeechFormat, blocks: list[np.ndarray], rate_hz: int) -> list[bytes]:
    encoder = SpeechEncoder(fmt, rate_hz)
    return [*(encoder.feed(block) for block in blocks), encoder.finish()]


@pytest.mark.parametrize("fmt", [f for f in SpeechFormat if f is not SpeechFormat.PCM])
def test_each_format_decodes_back_to_the_audio_at_24_khz(fmt: SpeechFormat) -> None:
    # espeak-ng's 22050 Hz, in blocks of a fifth of a second, as sentences arrive.
    samples = tone(2.0, 22_050)
    parts = encode(fmt, np.array_split(samples, 10), 22_050)
    with av.open(io.BytesIO(b"".join(parts))) as container:
        stream = container.streams.audio[0]
        decoded = sum(frame.samples for frame in container.decode(stream))
        assert stream.codec_context.name in {"mp3float", "mp3", "opus", "libopus", "aac", "flac", "pcm_s16le"}
        assert stream.rate == (48_000 if fmt is SpeechFormat.OPUS else SPEECH_RATE_HZ)
        assert decoded / stream.rate == pytest.approx(2.0, abs=0.08)
    assert sum(1 for part in parts[:-1] if part) >= 5, "bytes leave as blocks are fed, not only at the end"


def test_pcm_is_raw_pcm16_at_24_khz_and_wav_has_the_streaming_header() -> None:
    samples = tone(1.0, SPEECH_RATE_HZ)
    pcm = b"".join(encode(SpeechFormat.PCM, [samples], SPEECH_RATE_HZ))
    assert pcm == samples.astype("<i2").tobytes()
    wav = b"".join(encode(SpeechFormat.WAV, [samples[:100], samples[100:]], SPEECH_RATE_HZ))
    assert wav[:4] == b"RIFF" and wav[8:16] == b"WAVEfmt " and wav[36:40] == b"data"
    assert wav[4:8] == wav[40:44] == b"\xff\xff\xff\xff"
    assert int.from_bytes(wav[24:28], "little") == SPEECH_RATE_HZ
    assert wav[44:] == pcm


def test_content_types_are_those_openai_sends() -> None:
    assert content_type(SpeechFormat.MP3) == "audio/mpeg"
    assert content_type(SpeechFormat.OPUS) == "audio/ogg"
    assert content_type(SpeechFormat.PCM) == "audio/pcm"


# --- Catalog ----------------------------------------------------------------------------------------


def test_a_catalog_without_speech_models_keeps_espeak(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("models:\n  p:\n    engine: pocketsphinx\n")
    catalog = Catalog.from_file(path)
    assert list(catalog.speech_models) == ["espeak"]
    assert catalog.resolve_speech(None) == catalog.resolve_speech("tts-1") == "espeak"
    assert catalog.resolve_speech("gpt-4o-mini-tts") == catalog.resolve_speech("tts-1-hd") == "espeak"
    assert catalog.speech_names_of("espeak") == {"espeak", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"}
    with pytest.raises(ModelNotFound):
        catalog.resolve_speech("p")


def test_a_catalog_may_define_openai_names_or_no_synthesis(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "speech_models:\n  espeak: {engine: espeak}\n"
        "  tts-1-hd: {engine: openai_compatible, base_url: 'http://x/v1', fallbacks: [espeak]}\n"
    )
    catalog = Catalog.from_file(path)
    assert catalog.resolve_speech("tts-1-hd") == "tts-1-hd" and catalog.resolve_speech("tts-1") == "espeak"
    path.write_text("speech_models: {}\n")
    with pytest.raises(ModelNotFound):
        Catalog.from_file(path).resolve_speech("tts-1")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("speech_models:\n  whisper-tiny.en: {engine: espeak}\n", "also a transcription model"),
        ("speech_models:\n  a: {engine: espeak, fallbacks: [b]}\n", "unknown speech model 'b'"),
        ("speech_models:\n  a: {engine: espeak}\ndefault_speech_model: z\n", "default_speech_model"),
        ("speech_models:\n  a: {engine: festival}\n", "engine"),
        ("speech_models:\n  a: {engine: espeak, unit: second}\n", "unit"),
    ],
)
def test_bad_speech_models_are_catalog_errors(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError, match=problem):
        Catalog.from_file(path)


def test_characters_are_billed_per_character() -> None:
    assert Price(0.00002, "character").quantity(audio_ms=9_000, characters=120) == 120
    assert Price(0.001, "second").quantity(audio_ms=1_500) == 1.5


# --- The fallback chain -----------------------------------------------------------------------------


class ScriptedSynthesizer:
    """A synthesizer that fails as told before its first bytes, or says `body` in two parts."""

    def __init__(self, name: str, failure: Exception | None = None, body: bytes = b"audio") -> None:
        self.name = name
        self.failure = failure
        self.body = body
        self.calls = 0
        self.ready = True

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def synthesize(self, request: SpeechRequest) -> AsyncIterator[bytes]:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        yield self.body[:2]
        yield self.body[2:]


def chain(*synthesizers: ScriptedSynthesizer) -> SynthesisChain:
    return SynthesisChain(
        [
            SynthesisProvider(s.name, s, CircuitBreaker(2, 30.0), ConcurrencyGate(s.name, 1, 0))
            for s in synthesizers
        ],
        clock=lambda: 0.0,
    )


async def spoken(synthesis: SynthesisChain) -> tuple[str, bytes]:
    stream = await synthesis.open(SpeechRequest("hi", "alloy"))
    try:
        return stream.model_id, b"".join([part async for part in stream])
    finally:
        await stream.aclose()


async def test_a_transient_failure_falls_back_and_opens_the_breaker() -> None:
    failing = ScriptedSynthesizer("up", UpstreamError("down", transient=True, status=503))
    backup = ScriptedSynthesizer("espeak", body=b"backup")
    synthesis = chain(failing, backup)
    assert await spoken(synthesis) == ("espeak", b"backup")
    assert await spoken(synthesis) == ("espeak", b"backup")
    assert await spoken(synthesis) == ("espeak", b"backup")
    assert failing.calls == 2, "the breaker opened after two failures"


async def test_the_callers_own_errors_are_not_retried_elsewhere() -> None:
    for failure in (UpstreamError("bad", transient=False, status=400), UnknownVoice("zz")):
        backup = ScriptedSynthesizer("espeak")
        with pytest.raises(type(failure)):
            await spoken(chain(ScriptedSynthesizer("up", failure), backup))
        assert backup.calls == 0


async def test_the_last_failure_is_raised_when_every_provider_fails() -> None:
    down = UpstreamError("down", transient=True, status=502)
    with pytest.raises(UpstreamError, match="down"):
        await spoken(chain(ScriptedSynthesizer("a", down), ScriptedSynthesizer("b", down)))


async def test_a_stream_holds_its_slot_until_closed() -> None:
    synthesis = chain(ScriptedSynthesizer("espeak"))
    stream = await synthesis.open(SpeechRequest("hi", "alloy"))
    gate = synthesis.providers[0].gate
    assert gate.active == 1
    await stream.aclose()
    assert gate.active == 0


# --- The request body -------------------------------------------------------------------------------


def test_a_body_like_the_sdks_is_accepted_with_openais_defaults() -> None:
    params = SpeechParams.from_body(b'{"model": "tts-1", "input": "Hello", "voice": "alloy"}')
    assert params.response_format is SpeechFormat.MP3 and params.speed == 1.0 and params.instructions is None


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (b"not json", None, "not valid JSON"),
        (b"[1]", None, "JSON object"),
        (b'{"voice": "alloy", "input": ""}', "input", "empty"),
        (b'{"voice": "alloy", "input": "' + b"a" * (MAX_INPUT_CHARS + 1) + b'"}', "input", "4096"),
        (b'{"input": "hi"}', "voice", "missing"),
        (b'{"voice": "alloy", "input": "hi", "response_format": "ogg"}', "response_format", "mp3, opus"),
        (b'{"voice": "alloy", "input": "hi", "speed": 0.1}', "speed", "between 0.25 and 4.0"),
        (b'{"voice": "alloy", "input": "hi", "stream_format": "sse"}', "stream_format", "not offered"),
    ],
)
def test_bad_bodies_are_400s_naming_the_parameter(body: bytes, param: str | None, message: str) -> None:
    with pytest.raises(OpenAIError) as caught:
        SpeechParams.from_body(body)
    assert caught.value.status == 400 and caught.value.param == param and message in caught.value.message
