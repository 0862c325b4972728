"""Raw audio as clients send it: one reader for every live protocol, the Realtime relay and prerecorded.

Raw audio is sample frames of PCM16 (little-endian), G.711 μ-law or A-law, with one or more interleaved
channels, at some rate, and a WebSocket message may end in the middle of a frame. The reader expands G.711,
mixes channels down to mono, keeps a partial frame for the next message, and counts the whole frames it has
read: the same bytes are the same audio, and the same billed milliseconds, on every path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from earshot.audio.pcm import alaw_to_pcm16, ulaw_to_pcm16

RawEncoding = Literal["pcm16", "mulaw", "alaw"]


@dataclass(frozen=True, slots=True)
class RawFormat:
    """How a client's raw bytes are laid out."""

    rate_hz: int
    encoding: RawEncoding = "pcm16"
    channels: int = 1

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample frame (one sample of every channel)."""
        return (2 if self.encoding == "pcm16" else 1) * self.channels

    def ms_of(self, frames: int) -> float:
        """Milliseconds that many frames last."""
        return frames / self.rate_hz * 1000


class RawAudioReader:
    """Reads one stream's raw messages into mono PCM16 at the format's rate."""

    def __init__(self, raw_format: RawFormat) -> None:
        self.format = raw_format
        self.frames_read = 0
        self._partial_frame = b""

    @property
    def ms_read(self) -> float:
        """Milliseconds of audio in the whole frames read so far."""
        return self.format.ms_of(self.frames_read)

    def read(self, data: bytes) -> bytes:
        """Mono PCM16 of the whole frames that `data` completes; a trailing partial frame waits for more."""
        frame_bytes = self.format.frame_bytes
        if self._partial_frame:
            data = self._partial_frame + data
        whole = len(data) - len(data) % frame_bytes
        self._partial_frame = data[whole:]
        if not whole:
            return b""
        self.frames_read += whole // frame_bytes
        return mono_pcm16(data[:whole] if whole < len(data) else data, self.format)


def mono_pcm16(frames: bytes, raw_format: RawFormat) -> bytes:
    """Whole raw frames as mono PCM16: G.711 expanded, channels averaged."""
    if raw_format.encoding == "mulaw":
        frames = ulaw_to_pcm16(frames)
    elif raw_format.encoding == "alaw":
        frames = alaw_to_pcm16(frames)
    if raw_format.channels == 1:
        return frames
    interleaved = np.frombuffer(frames, dtype="<i2").reshape(-1, raw_format.channels)
    mixed: bytes = interleaved.mean(axis=1, dtype=np.float32).round().astype("<i2").tobytes()
    return mixed
