"""PCM inside earshot: mono float32 at 16 kHz, and the conversions to and from it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

ENGINE_RATE_HZ = 16_000


@dataclass(frozen=True, slots=True)
class Audio:
    """Decoded audio: mono float32 samples in [-1, 1] at ENGINE_RATE_HZ."""

    samples: np.ndarray

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return len(self.samples) / ENGINE_RATE_HZ

    def pcm16(self) -> bytes:
        """Little-endian signed 16-bit PCM of the samples."""
        return float_to_pcm16(self.samples)

    def slice(self, start_s: float, end_s: float) -> Audio:
        """The audio between two times, in seconds."""
        return Audio(self.samples[int(start_s * ENGINE_RATE_HZ) : int(end_s * ENGINE_RATE_HZ)])


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] to little-endian PCM16 bytes, clipping overs."""
    scaled = np.clip(np.rint(samples * 32767.0), -32768, 32767)
    return scaled.astype("<i2").tobytes()


def pcm16_to_float(data: bytes | memoryview, channels: int = 1) -> np.ndarray:
    """Little-endian PCM16 bytes to mono float32, averaging interleaved channels."""
    usable = len(data) - len(data) % (2 * channels)
    ints = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        ints = ints.reshape(-1, channels).mean(axis=1)
    return ints.astype(np.float32, copy=False)


def to_engine_rate(samples: np.ndarray, rate_hz: int) -> np.ndarray:
    """Resample mono float32 samples from `rate_hz` to ENGINE_RATE_HZ."""
    if rate_hz == ENGINE_RATE_HZ or len(samples) == 0:
        return samples.astype(np.float32, copy=False)
    resampled = soxr.resample(samples, rate_hz, ENGINE_RATE_HZ, quality="HQ")
    return np.asarray(resampled, dtype=np.float32)


class StreamResampler:
    """Resamples one live stream's chunks to ENGINE_RATE_HZ, carrying filter state across chunks."""

    def __init__(self, rate_hz: int) -> None:
        self.rate_hz = rate_hz
        self._stream = (
            None
            if rate_hz == ENGINE_RATE_HZ
            else soxr.ResampleStream(rate_hz, ENGINE_RATE_HZ, 1, dtype="float32", quality="HQ")
        )

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """The engine-rate samples for the next chunk."""
        if self._stream is None:
            return samples.astype(np.float32, copy=False)
        return np.asarray(self._stream.resample_chunk(samples), dtype=np.float32)

    def flush(self) -> np.ndarray:
        """The engine-rate samples the filter still holds, once no chunk follows."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self._stream.resample_chunk(np.zeros(0, np.float32), last=True), dtype=np.float32)


def _ulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    magnitude = (((codes & 0x0F) << 3) + 0x84) << exponent
    return np.where(codes & 0x80, 0x84 - magnitude, magnitude - 0x84).astype("<i2")


def _alaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (codes >> 4) & 0x07
    mantissa = (codes & 0x0F) << 4
    magnitude = np.where(exponent == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(codes & 0x80, magnitude, -magnitude).astype("<i2")


_ULAW_TO_PCM16 = _ulaw_table()
_ALAW_TO_PCM16 = _alaw_table()


def ulaw_to_pcm16(data: bytes) -> bytes:
    """G.711 μ-law bytes to little-endian PCM16 at the same rate."""
    return _ULAW_TO_PCM16[np.frombuffer(data, dtype=np.uint8)].tobytes()


def alaw_to_pcm16(data: bytes) -> bytes:
    """G.711 A-law bytes to little-endian PCM16 at the same rate."""
    return _ALAW_TO_PCM16[np.frombuffer(data, dtype=np.uint8)].tobytes()
