"""Decoding uploads of every common format, from real speech encoded in the test."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import av
import numpy as np
import pytest

from earshot.audio.decode import (
    AudioDecodeError,
    AudioTooLong,
    EmptyAudio,
    decode_audio,
    decode_audio_async,
    decode_pcm16,
    decode_pcm16_async,
    parse_raw_pcm_content_type,
)
from earshot.audio.pcm import ENGINE_RATE_HZ, Audio

SHARED_AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"
JFK = SHARED_AUDIO / "jfk" / "jfk.flac"  # 11 s, 44.1 kHz stereo
GOFORWARD = SHARED_AUDIO / "pocketsphinx-testdata" / "goforward.wav"  # 2.79 s, 16 kHz mono
GEORGE = SHARED_AUDIO / "fsdd" / "0_george_0.wav"  # 0.298 s, 8 kHz mono

pytestmark = pytest.mark.skipif(
    not (JFK.exists() and GOFORWARD.exists() and GEORGE.exists()),
    reason=f"shared speech recordings not found under {SHARED_AUDIO}",
)


@dataclass(frozen=True)
class Case:
    """One way of encoding a source recording."""

    source: Path
    container: str | None  # None: raw interleaved PCM16
    codec: str
    rate: int
    layout: str
    sample_fmt: str
    lossy: bool = False
    options: dict[str, str] = field(default_factory=dict)


CASES = {
    "flac": Case(JFK, "flac", "flac", 44_100, "stereo", "s16"),
    "mp3": Case(JFK, "mp3", "libmp3lame", 44_100, "stereo", "fltp", lossy=True),
    "m4a_aac": Case(JFK, "ipod", "aac", 44_100, "stereo", "fltp", lossy=True),
    "ogg_opus": Case(GOFORWARD, "ogg", "libopus", 48_000, "mono", "flt", lossy=True),
    "webm_opus": Case(JFK, "webm", "libopus", 48_000, "stereo", "flt", lossy=True),
    "ogg_vorbis": Case(JFK, "ogg", "vorbis", 44_100, "stereo", "fltp", True, {"strict": "experimental"}),
    "wav_8k_mono": Case(JFK, "wav", "pcm_s16le", 8_000, "mono", "s16"),
    "wav_44k_stereo": Case(JFK, "wav", "pcm_s16le", 44_100, "stereo", "s16"),
    "wav_u8": Case(GOFORWARD, "wav", "pcm_u8", 16_000, "mono", "u8"),
    "wav_s24_48k": Case(JFK, "wav", "pcm_s24le", 48_000, "stereo", "s32"),
    "wav_s32": Case(JFK, "wav", "pcm_s32le", 44_100, "stereo", "s32"),
    "wav_f32_22k": Case(GOFORWARD, "wav", "pcm_f32le", 22_050, "mono", "flt"),
    "wav_s64": Case(GOFORWARD, "wav", "pcm_s64le", 16_000, "mono", "s64"),
    "wav_5.1": Case(JFK, "wav", "pcm_s16le", 48_000, "5.1", "s16"),
    "mp2_planar_s16": Case(JFK, "mp2", "mp2", 44_100, "stereo", "s16", lossy=True),
    "raw_pcm16": Case(JFK, None, "", 44_100, "stereo", "s16"),
}


@cache
def encode(name: str) -> bytes:
    """The case's source recording encoded as the case says."""
    case = CASES[name]
    out = io.BytesIO()
    resampler = av.AudioResampler(format=case.sample_fmt, layout=case.layout, rate=case.rate)
    with av.open(str(case.source)) as src:
        frames = [f for frame in src.decode(audio=0) for f in resampler.resample(frame)]
    frames += resampler.resample(None)
    if case.container is None:
        return b"".join(f.to_ndarray().astype("<i2").tobytes() for f in frames)
    with av.open(out, "w", format=case.container) as dst:
        stream = dst.add_stream(case.codec, rate=case.rate, layout=case.layout, options=case.options)
        assert isinstance(stream, av.AudioStream)
        stream.format = case.sample_fmt
        for frame in [*frames, None]:
            for packet in stream.encode(frame):
                dst.mux(packet)
    return out.getvalue()


@cache
def reference(source: Path) -> np.ndarray:
    """The source decoded to 16 kHz mono float32 by FFmpeg alone."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=ENGINE_RATE_HZ)
    with av.open(str(source)) as src:
        frames = [f for frame in src.decode(audio=0) for f in resampler.resample(frame)]
    frames += resampler.resample(None)
    return np.concatenate([f.to_ndarray()[0] for f in frames])


def similarity(a: np.ndarray, b: np.ndarray, max_lag_s: float = 0.1) -> float:
    """Peak normalised cross-correlation of two signals over lags up to `max_lag_s`."""
    size = len(a) + len(b)
    corr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    lag = int(max_lag_s * ENGINE_RATE_HZ)
    window = np.concatenate([corr[: lag + 1], corr[-lag:]])
    return float(window.max() / (np.linalg.norm(a) * np.linalg.norm(b)))


def decode_case(name: str, max_seconds: float | None = None) -> Audio:
    """Decode a case's bytes the way the gateway would."""
    case, data = CASES[name], encode(name)
    if case.container is None:
        channels = av.AudioLayout(case.layout).nb_channels
        return decode_pcm16(data, sample_rate=case.rate, channels=channels, max_seconds=max_seconds)
    return decode_audio(data, max_seconds=max_seconds)


@pytest.mark.parametrize("name", CASES)
def test_decodes_format_to_engine_audio(name: str) -> None:
    case = CASES[name]
    ref = reference(case.source)
    audio = decode_case(name)
    assert audio.samples.dtype == np.float32
    assert audio.samples.ndim == 1
    assert np.abs(audio.samples).max() <= 1.0
    assert audio.duration_s == pytest.approx(len(ref) / ENGINE_RATE_HZ, abs=0.1 if case.lossy else 0.05)
    assert similarity(audio.samples, ref) > (0.95 if case.lossy else 0.98)


def test_fsdd_clip_duration() -> None:
    audio = decode_audio(GEORGE.read_bytes())
    assert audio.duration_s == pytest.approx(0.298, abs=0.005)
    assert similarity(audio.samples, reference(GEORGE)) > 0.99


def test_garbage_is_a_decode_error() -> None:
    with pytest.raises(AudioDecodeError, match="could not decode audio"):
        decode_audio(b"this is certainly not an audio file\n" * 200)


def test_empty_bytes_are_empty_audio() -> None:
    with pytest.raises(EmptyAudio):
        decode_audio(b"")
    with pytest.raises(EmptyAudio):
        decode_pcm16(b"\x01", sample_rate=16_000)


@pytest.mark.parametrize("name", ["flac", "mp3", "m4a_aac", "ogg_opus", "webm_opus"])
def test_file_truncated_to_its_header_is_a_decode_error(name: str) -> None:
    with pytest.raises(AudioDecodeError):
        decode_audio(encode(name)[:100])


@pytest.mark.parametrize("name", ["flac", "mp3", "ogg_vorbis", "webm_opus", "wav_s24_48k"])
def test_file_cut_mid_stream_gives_the_audio_before_the_cut(name: str) -> None:
    data = encode(name)
    audio = decode_audio(data[: len(data) // 2])
    assert 4.5 < audio.duration_s < 6.0
    assert similarity(audio.samples, reference(JFK)[: len(audio.samples)]) > 0.9


def test_file_with_no_audio_stream_is_a_decode_error() -> None:
    out = io.BytesIO()
    with av.open(out, "w", format="matroska") as dst:
        stream = dst.add_stream("mpeg4", rate=10, width=16, height=16)
        for packet in [*stream.encode(av.VideoFrame(16, 16, "yuv420p")), *stream.encode(None)]:
            dst.mux(packet)
    with pytest.raises(AudioDecodeError, match="no audio stream"):
        decode_audio(out.getvalue())


@pytest.mark.parametrize("name", ["flac", "raw_pcm16"])
def test_too_long_stops_with_the_limit(name: str) -> None:
    with pytest.raises(AudioTooLong) as info:
        decode_case(name, max_seconds=2)
    assert info.value.limit_s == 2
    assert decode_case(name, max_seconds=12).duration_s == pytest.approx(11.0, abs=0.05)


def test_pcm16_validates_rate_and_channels_and_ignores_odd_byte() -> None:
    with pytest.raises(AudioDecodeError, match="sample rate"):
        decode_pcm16(b"\x00\x00" * 10, sample_rate=4_000)
    with pytest.raises(AudioDecodeError, match="channels"):
        decode_pcm16(b"\x00\x00" * 10, sample_rate=16_000, channels=9)
    audio = decode_pcm16(b"\x00\x40" * 160 + b"\x7f", sample_rate=16_000)
    assert len(audio.samples) == 160
    assert np.allclose(audio.samples, 0.5)


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("audio/pcm", (16_000, 1)),
        ("audio/pcm;rate=24000", (24_000, 1)),
        ("audio/L16; rate=16000; channels=2", (16_000, 2)),
        ("audio/x-raw; sample_rate=8000", (8_000, 1)),
        ('audio/raw; rate="44100"; channels=1', (44_100, 1)),
        ("audio/wav", None),
        ("audio/mpeg", None),
        ("application/octet-stream", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_raw_pcm_content_type(content_type: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_raw_pcm_content_type(content_type) == expected


def test_parse_raw_pcm_content_type_rejects_bad_parameters() -> None:
    with pytest.raises(AudioDecodeError):
        parse_raw_pcm_content_type("audio/pcm; rate=fast")


async def test_async_decodes_match_sync_and_wait_for_the_limiter() -> None:
    flac, raw = encode("flac"), encode("raw_pcm16")
    limiter = asyncio.Semaphore(1)
    from_file, from_raw = await asyncio.gather(
        decode_audio_async(flac, limiter=limiter),
        decode_pcm16_async(raw, sample_rate=44_100, channels=2, limiter=limiter),
    )
    assert np.array_equal(from_file.samples, decode_audio(flac).samples)
    assert np.array_equal(from_raw.samples, decode_pcm16(raw, sample_rate=44_100, channels=2).samples)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(decode_audio_async(flac, limiter=asyncio.Semaphore(0)), 0.1)


def test_corrupt_data_mid_stream_is_a_decode_error() -> None:
    data = bytearray(encode("mp3"))
    start = len(data) * 2 // 5
    data[start : start + 3000] = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    with pytest.raises(AudioDecodeError):
        decode_audio(bytes(data))


def test_channels_are_averaged_not_picked() -> None:
    speech = reference(GOFORWARD)
    packed = np.stack([speech, np.zeros_like(speech)], axis=1).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(packed, format="flt", layout="stereo")
    frame.rate = ENGINE_RATE_HZ
    out = io.BytesIO()
    with av.open(out, "w", format="wav") as dst:
        stream = dst.add_stream("pcm_f32le", rate=ENGINE_RATE_HZ, layout="stereo")
        assert isinstance(stream, av.AudioStream)
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            dst.mux(packet)
    np.testing.assert_allclose(decode_audio(out.getvalue()).samples, speech / 2, atol=1e-7)
