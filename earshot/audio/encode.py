"""Speech audio (PCM16 mono) to the response formats of `/v1/audio/speech`, incrementally.

Each `SpeechEncoder` is fed PCM16 blocks as they are synthesized and returns the bytes to send so far, so a
response streams out while the rest of the text is still being spoken. The compressed formats are muxed with
PyAV into a sink that never seeks (the body is already on its way), so their headers carry no total length,
as a streamed file can't; `wav` gets the streaming placeholder sizes (0xFFFFFFFF) OpenAI sends too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

import av
import numpy as np
import soxr

SPEECH_RATE_HZ = 24_000
# The RIFF and data chunk sizes of a WAV whose length isn't known when its header is sent.
STREAMING_WAV_SIZE = 0xFFFFFFFF


class SpeechFormat(StrEnum):
    """The `response_format`s of OpenAI's speech endpoint."""

    MP3 = "mp3"
    OPUS = "opus"
    AAC = "aac"
    FLAC = "flac"
    WAV = "wav"
    PCM = "pcm"


CONTENT_TYPES: dict[SpeechFormat, str] = {
    SpeechFormat.MP3: "audio/mpeg",
    SpeechFormat.OPUS: "audio/ogg",
    SpeechFormat.AAC: "audio/aac",
    SpeechFormat.FLAC: "audio/flac",
    SpeechFormat.WAV: "audio/wav",
    SpeechFormat.PCM: "audio/pcm",
}


@dataclass(frozen=True, slots=True)
class _Codec:
    container: str
    codec: str
    sample_format: str
    bit_rate: int | None = None
    # Muxer options: Ogg pages of 100 ms rather than 1 s, so Opus audio leaves as it is encoded.
    options: tuple[tuple[str, str], ...] = ()


# Ogg Opus, as OpenAI's `opus`; ADTS for `aac`, so each frame can be played as it arrives.
_CODECS: dict[SpeechFormat, _Codec] = {
    SpeechFormat.MP3: _Codec("mp3", "libmp3lame", "s16p", 64_000),
    SpeechFormat.OPUS: _Codec("ogg", "libopus", "s16", 32_000, (("page_duration", "100000"),)),
    SpeechFormat.AAC: _Codec("adts", "aac", "fltp", 64_000),
    SpeechFormat.FLAC: _Codec("flac", "flac", "s16"),
}


def content_type(fmt: SpeechFormat) -> str:
    """The Content-Type of a response in this format."""
    return CONTENT_TYPES[fmt]


def streaming_wav_header(rate_hz: int = SPEECH_RATE_HZ) -> bytes:
    """A PCM16 mono WAV header whose sizes say 'until the stream ends'."""
    byte_rate = rate_hz * 2
    return (
        b"RIFF"
        + struct.pack("<I", STREAMING_WAV_SIZE)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate_hz, byte_rate, 2, 16)
        + b"data"
        + struct.pack("<I", STREAMING_WAV_SIZE)
    )


class _Sink:
    """A write-only file for PyAV: what the muxer wrote since the last `take`."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


class SpeechEncoder:
    """PCM16 mono blocks at `input_rate_hz` in, one 24 kHz response's bytes in `fmt` out, as they're ready.

    Not thread-safe: one request's encoder is used by one thread at a time.
    """

    def __init__(self, fmt: SpeechFormat, input_rate_hz: int = SPEECH_RATE_HZ) -> None:
        self.format = fmt
        self.rate_hz = SPEECH_RATE_HZ
        self._resampler = (
            None
            if input_rate_hz == SPEECH_RATE_HZ
            else soxr.ResampleStream(input_rate_hz, SPEECH_RATE_HZ, 1, dtype="int16", quality="HQ")
        )
        self._started = False
        self._samples_in = 0
        self._container: av.container.OutputContainer | None = None
        self._stream: av.audio.stream.AudioStream | None = None
        self._sink = _Sink()
        codec = _CODECS.get(fmt)
        if codec is not None:
            self._container = av.open(
                self._sink, mode="w", format=codec.container, options=dict(codec.options)
            )
            stream = self._container.add_stream(codec.codec, rate=SPEECH_RATE_HZ)
            assert isinstance(stream, av.audio.stream.AudioStream)
            stream.layout = "mono"
            stream.format = codec.sample_format
            if codec.bit_rate is not None:
                stream.bit_rate = codec.bit_rate
            self._stream = stream

    def feed(self, pcm: np.ndarray) -> bytes:
        """Encode a block of int16 samples; the bytes now ready to send (maybe none)."""
        samples = np.ascontiguousarray(pcm, dtype=np.int16)
        if self._resampler is not None:
            samples = np.asarray(self._resampler.resample_chunk(samples), dtype=np.int16)
        return self._encode(samples)

    def _encode(self, samples: np.ndarray) -> bytes:
        header = self._header()
        if self._container is None:
            return header + samples.tobytes()
        if not samples.size:
            return header
        assert self._stream is not None
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate_hz
        frame.pts = self._samples_in
        frame.time_base = Fraction(1, self.rate_hz)
        self._samples_in += samples.size
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return header + self._sink.take()

    def finish(self) -> bytes:
        """Flush the resampler, the encoder and the container; the last bytes to send."""
        tail = b""
        if self._resampler is not None:
            held = self._resampler.resample_chunk(np.zeros(0, np.int16), last=True)
            tail = self._encode(np.asarray(held, dtype=np.int16))
        header = self._header()
        if self._container is None:
            return tail + header
        assert self._stream is not None
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None
        return tail + header + self._sink.take()

    def close(self) -> None:
        """Drop the encoder without finishing (the client went away)."""
        if self._container is not None:
            self._container.close()
            self._container = None

    def _header(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return streaming_wav_header(self.rate_hz) if self.format is SpeechFormat.WAV else b""
