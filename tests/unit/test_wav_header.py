"""A PCM16 WAV upload is counted from its header, without PyAV: the same seconds and samples as decoding."""

from __future__ import annotations

import asyncio
import io
import struct
import wave
from functools import partial

import numpy as np
import pytest

from earshot.api.uploads import decode_upload
from earshot.audio.decode import AudioTooLong, EmptyAudio, container_blocks, encoded_audio_async
from earshot.audio.wav import pcm16_wav_layout


def tone_wav(seconds: float, rate_hz: int, channels: int = 1) -> bytes:
    frames = int(seconds * rate_hz)
    t = np.arange(frames) / rate_hz
    mono = (np.sin(2 * np.pi * 440 * t) * 12_000).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate_hz)
        out.writeframes(np.repeat(mono, channels).tobytes())
    return buffer.getvalue()


def with_list_chunk(data: bytes) -> bytes:
    """The WAV with a LIST chunk (odd-sized, so padded) before its data chunk, as some recorders write."""
    fmt_end = 12 + 8 + struct.unpack_from("<I", data, 16)[0]
    extra = b"LIST" + struct.pack("<I", 5) + b"INFOx\x00"
    body = data[12:fmt_end] + extra + data[fmt_end:]
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


async def decoded_by_pyav(data: bytes) -> tuple[float, np.ndarray]:
    audio = await encoded_audio_async(partial(container_blocks, data))
    return audio.duration_s, audio.samples


@pytest.mark.parametrize(
    ("rate_hz", "channels"), [(16_000, 1), (16_000, 2), (8_000, 1), (44_100, 2), (48_000, 1)]
)
async def test_a_wav_counts_the_same_seconds_and_samples_as_decoding_it(rate_hz: int, channels: int) -> None:
    data = tone_wav(1.37, rate_hz, channels)
    audio = await decode_upload(data, "audio/wav", 60.0, asyncio.Semaphore(1))
    seconds, samples = await decoded_by_pyav(data)
    assert audio.duration_s == seconds
    assert len(audio.samples) == len(samples)
    np.testing.assert_allclose(audio.samples, samples, atol=1e-4)


async def test_a_16khz_mono_wav_is_relayed_as_its_own_samples() -> None:
    data = with_list_chunk(tone_wav(0.5, 16_000))
    layout = pcm16_wav_layout(data)
    assert layout is not None and layout.engine_ready
    audio = await decode_upload(data, "audio/wav", 60.0, asyncio.Semaphore(1))
    assert audio.pcm16() == bytes(data[layout.data_start :])
    assert audio.duration_s == 0.5


async def test_a_wav_cut_short_counts_what_it_holds_and_its_claim_is_held_to_the_limit() -> None:
    data = tone_wav(2.0, 16_000)
    cut = data[: 44 + 16_000 * 2 + 1]
    audio = await decode_upload(cut, "audio/wav", 60.0, asyncio.Semaphore(1))
    assert audio.duration_s == (await decoded_by_pyav(cut))[0] == 1.0
    # Its header says 2 s: refused by a 1.5 s limit on its word, as PyAV refuses it.
    with pytest.raises(AudioTooLong):
        await decode_upload(cut, "audio/wav", 1.5, asyncio.Semaphore(1))


async def test_a_wav_with_no_frames_is_empty() -> None:
    with pytest.raises(EmptyAudio):
        await decode_upload(tone_wav(0.0, 16_000), "audio/wav", 60.0, asyncio.Semaphore(1))


def test_other_wavs_are_left_to_pyav() -> None:
    data = bytearray(tone_wav(0.1, 16_000))
    struct.pack_into("<H", data, 20, 3)  # IEEE float
    assert pcm16_wav_layout(bytes(data)) is None
    assert pcm16_wav_layout(b"OggS" + bytes(40)) is None
