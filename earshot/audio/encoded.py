"""An upload's audio kept as its encoded bytes and decoded again whenever it is read.

A one-shot upload is counted once when it arrives (its length, and whether it decodes at all), then read block
by block by engines that can take it so (faster-whisper finds its speech, then decodes piece by piece), so an
hour of audio never sits in memory as an hour of float32 samples. Engines that need every sample at once read
`samples`, which decodes the whole, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator

import numpy as np

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio

# Blocks handed to a reader: a few seconds of audio each.
BLOCK_SAMPLES = ENGINE_RATE_HZ * 10


class EncodedAudio(Audio):
    """Audio read from its encoded bytes on demand. `blocks()` decodes afresh each time it is called."""

    _read: Callable[[], Iterator[np.ndarray]]
    _length: int
    _engine_pcm16: memoryview | None

    def __init__(
        self, read: Callable[[], Iterator[np.ndarray]], length: int, engine_pcm16: memoryview | None = None
    ) -> None:
        # Audio is a frozen dataclass; this subclass keeps its own attributes and computes `samples`.
        object.__setattr__(self, "_read", read)
        object.__setattr__(self, "_length", length)
        # The upload's own bytes when they already are engine PCM16 (16 kHz mono): `pcm16` needs no decode.
        object.__setattr__(self, "_engine_pcm16", engine_pcm16)

    @classmethod
    def counted(cls, read: Callable[[], Iterator[np.ndarray]]) -> EncodedAudio:
        """Decode once to count the samples (raising whatever the decoder raises), keeping none of them."""
        return cls(read, sum(len(block) for block in read()))

    @property  # type: ignore[misc]
    def samples(self) -> np.ndarray:  # type: ignore[override]
        """Every sample, decoded now (for engines that need the whole recording at once)."""
        chunks = [chunk for chunk in self._read() if len(chunk)]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)

    @property
    def duration_s(self) -> float:
        """Length in seconds, as counted when the audio arrived."""
        return self._length / ENGINE_RATE_HZ

    def pcm16(self) -> bytes:
        """Little-endian PCM16 at the engine rate: the upload's own samples if it came so, else decoded."""
        if self._engine_pcm16 is not None:
            return bytes(self._engine_pcm16)
        return super().pcm16()

    def blocks(self, block_samples: int = BLOCK_SAMPLES) -> Generator[np.ndarray, None, None]:
        """The samples in blocks of `block_samples` (the last may be shorter), decoded as they are read."""
        pending: list[np.ndarray] = []
        held = 0
        for chunk in self._read():
            pending.append(chunk)
            held += len(chunk)
            if held >= block_samples:
                joined = np.concatenate(pending)
                cut = held - held % block_samples
                for start in range(0, cut, block_samples):
                    yield joined[start : start + block_samples]
                pending, held = [joined[cut:]], held - cut
        if held:
            yield np.concatenate(pending)

    def __repr__(self) -> str:
        return f"EncodedAudio({self.duration_s:.3f} s)"
