"""PCM16 WAV files read from their header: counted and sliced without a decoder.

An OpenAI SDK upload is usually a plain WAV of little-endian PCM16. Its length is in its header, and its
samples are the bytes of its `data` chunk, so neither PyAV nor a worker thread is needed to count it, and a
relay can pass the samples on as they came. Anything else (another sample format, a header FFmpeg would read
some other way) gives None here and goes to PyAV as before.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from earshot.audio.pcm import ENGINE_RATE_HZ

PCM_FORMAT = 0x0001
EXTENSIBLE_FORMAT = 0xFFFE
# The tail of KSDATAFORMAT_SUBTYPE_PCM, after its first two bytes (the format tag, 1 for PCM).
_PCM_SUBTYPE_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
# A data chunk whose size says "unknown" (a streamed WAV): FFmpeg reads such a file to its end; PyAV does it.
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
MAX_CHANNELS = 8


@dataclass(frozen=True, slots=True)
class WavLayout:
    """Where a PCM16 WAV file's samples are and how they are laid out."""

    sample_rate: int
    channels: int
    # Offset of the first sample byte, and how many bytes of whole frames the file holds from there.
    data_start: int
    data_bytes: int
    # The frames the header declares (more than the file holds when the file is cut short).
    declared_frames: int

    @property
    def frames(self) -> int:
        """Frames (one sample per channel) in the file."""
        return self.data_bytes // (2 * self.channels)

    @property
    def engine_ready(self) -> bool:
        """Whether the samples already are engine PCM: 16 kHz mono PCM16."""
        return self.sample_rate == ENGINE_RATE_HZ and self.channels == 1

    def pcm16(self, data: bytes | memoryview) -> memoryview:
        """The file's sample bytes, without a copy."""
        return memoryview(data)[self.data_start : self.data_start + self.data_bytes]


def pcm16_wav_layout(data: bytes | memoryview) -> WavLayout | None:
    """The layout of a RIFF/WAVE file of little-endian PCM16, or None for anything else."""
    if len(data) < 12 or data[0:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset = 12
    fmt: tuple[int, int] | None = None
    while offset + 8 <= len(data):
        chunk_id = bytes(data[offset : offset + 4])
        (size,) = struct.unpack_from("<I", data, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt ":
            fmt = _pcm16_format(data[body : body + size])
            if fmt is None:
                return None
        elif chunk_id == b"data":
            if fmt is None or size in _UNKNOWN_SIZES:
                return None
            rate, channels = fmt
            frame_bytes = 2 * channels
            held = min(size, len(data) - body)
            return WavLayout(rate, channels, body, held - held % frame_bytes, size // frame_bytes)
        # Chunks are padded to an even length.
        offset = body + size + (size & 1)
    return None


def _pcm16_format(chunk: bytes | memoryview) -> tuple[int, int] | None:
    """(sample rate, channels) of a `fmt ` chunk describing interleaved PCM16, else None."""
    if len(chunk) < 16:
        return None
    tag, channels, rate, byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", chunk)
    if tag == EXTENSIBLE_FORMAT:
        if len(chunk) < 40 or struct.unpack_from("<H", chunk, 24)[0] != PCM_FORMAT:
            return None
        if bytes(chunk[26:40]) != _PCM_SUBTYPE_TAIL:
            return None
    elif tag != PCM_FORMAT:
        return None
    valid = (
        bits == 16
        and 1 <= channels <= MAX_CHANNELS
        and rate > 0
        and block_align == 2 * channels
        and byte_rate == rate * block_align
    )
    return (rate, channels) if valid else None
