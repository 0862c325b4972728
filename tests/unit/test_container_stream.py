"""Containerized audio (WebM/Ogg Opus) decoded as its bytes arrive, as a live socket receives it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from earshot.audio.decode import AudioDecodeError, ContainerStream
from tests.opus import opus_in_container


def _opus(container_format: str, seconds: float) -> bytes:
    tone = (np.sin(np.arange(int(48_000 * seconds)) * 2 * np.pi * 440 / 48_000) * 8000).astype("<i2")
    return opus_in_container(tone, container_format)


@pytest.mark.parametrize("container_format", ["webm", "ogg"])
async def test_a_container_stream_gives_16_khz_pcm_as_its_bytes_arrive(container_format: str) -> None:
    data = _opus(container_format, 2.0)
    stream = ContainerStream()
    pcm = bytearray()
    for start in range(0, len(data), 500):
        pcm += stream.feed(data[start : start + 500])
    pcm += await stream.settle()
    assert len(pcm) / 2 / 16_000 > 1.5, "nearly all of it decoded before the stream ends"
    pcm += await stream.finish()
    assert len(pcm) / 2 / 16_000 == pytest.approx(2.0, abs=0.05)


async def test_a_container_stream_of_garbage_fails_within_its_first_64_kib() -> None:
    stream = ContainerStream()
    with pytest.raises(AudioDecodeError):
        for _ in range(100):
            stream.feed(b"this is not audio " * 100)
            await asyncio.sleep(0.01)
        await stream.finish()
    stream.close()
