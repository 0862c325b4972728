"""Uploaded audio bytes (any container PyAV reads, or raw PCM16) to engine Audio."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import TypeVar

import av
import numpy as np

from earshot.audio.encoded import EncodedAudio
from earshot.audio.pcm import ENGINE_RATE_HZ, Audio, StreamResampler, float_to_pcm16, pcm16_to_float

AudioT = TypeVar("AudioT", bound=Audio)
RAW_PCM_TYPES = frozenset({"audio/pcm", "audio/l16", "audio/x-raw", "audio/raw"})
DEFAULT_RAW_RATE_HZ = 16_000
MIN_RAW_RATE_HZ, MAX_RAW_RATE_HZ = 8_000, 192_000
MAX_RAW_CHANNELS = 8
# Raw PCM is resampled a block at a time (a minute at 48 kHz), so no copy of the whole is made to read it.
RAW_BLOCK_FRAMES = 48_000 * 60
# Raw PCM up to this size that needs resampling is counted on the event loop (about 3 s at 44.1 kHz stereo).
INLINE_COUNT_BYTES = 512 * 1024
_SAMPLE_DTYPES = {"u8": "u1", "s16": "i2", "s32": "i4", "s64": "i8", "flt": "f4", "dbl": "f8"}


class AudioDecodeError(Exception):
    """The bytes could not be decoded as audio; the message is safe to show a user."""

    def __init__(self, message: str = "could not decode audio: unsupported or corrupt file") -> None:
        super().__init__(message)


class EmptyAudio(AudioDecodeError):
    """The input was empty or decoded to no samples."""

    def __init__(self, message: str = "audio is empty") -> None:
        super().__init__(message)


class AudioTooLong(Exception):
    """The audio is longer than the allowed number of seconds."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(f"audio is longer than the {limit_s:g} s limit")
        self.limit_s = limit_s


def _frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame (any sample format and layout) as mono float32 in [-1, 1]."""
    dtype = _SAMPLE_DTYPES.get(frame.format.packed.name)
    if dtype is None:
        raise AudioDecodeError(f"could not decode audio: unsupported sample format {frame.format.name}")
    channels, planar = frame.layout.nb_channels, frame.format.is_planar
    count = frame.samples if planar else frame.samples * channels
    planes = [np.frombuffer(memoryview(p), dtype, count) for p in frame.planes[: channels if planar else 1]]
    raw = np.stack(planes) if planar else planes[0].reshape(-1, channels).T
    if raw.dtype.kind == "f":
        return np.asarray(raw.mean(axis=0), dtype=np.float32)
    full_scale = float(2 ** (raw.dtype.itemsize * 8 - 1))
    offset = full_scale if raw.dtype.kind == "u" else 0.0
    return np.asarray((raw.mean(axis=0) - offset) / full_scale, dtype=np.float32)


class _Resampler:
    """Incremental resampling to ENGINE_RATE_HZ that follows input rate changes."""

    def __init__(self) -> None:
        self._stream: StreamResampler | None = None

    def feed(self, samples: np.ndarray, rate_hz: int) -> list[np.ndarray]:
        """The engine-rate samples of one chunk at `rate_hz` (after the old rate's tail, when it changes)."""
        out = []
        if self._stream is None or rate_hz != self._stream.rate_hz:
            out = self.flush()
            self._stream = StreamResampler(rate_hz)
        out.append(self._stream.feed(samples))
        return out

    def flush(self) -> list[np.ndarray]:
        """Drain the resampler's tail."""
        tail = self._stream.flush() if self._stream is not None else np.zeros(0, np.float32)
        self._stream = None
        return [tail] if len(tail) else []


def _frames(container: av.container.InputContainer, stream: av.AudioStream) -> Iterator[av.AudioFrame]:
    """Decoded frames of `stream`, dropping a decode error in the last packet (a file cut mid-frame)."""
    error: av.FFmpegError | None = None
    for packet in container.demux(stream):
        if error is not None and packet.size > 0:
            raise error
        try:
            yield from packet.decode()
        except av.FFmpegError as e:
            error = e


def declared_duration_s(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    """How long the container says its audio runs (None when it doesn't say); the decode still counts."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def container_blocks(data: bytes, *, max_seconds: float | None = None) -> Iterator[np.ndarray]:
    """The first audio stream of a file, decoded to engine-rate samples in the order the decoder gives them.

    A file cut short gives the audio before the cut (its last, partial frame is dropped); any other
    demuxer or decoder error raises AudioDecodeError.
    """
    if not data:
        raise EmptyAudio()
    resampler = _Resampler()
    decoded_s = 0.0
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioDecodeError("could not decode audio: the file has no audio stream")
            stream = container.streams.audio[0]
            declared_s = declared_duration_s(container, stream)
            if max_seconds is not None and declared_s is not None and declared_s > max_seconds:
                # Refused on the container's word, before any of it is decoded: a small file can hold hours.
                raise AudioTooLong(max_seconds)
            for frame in _frames(container, stream):
                decoded_s += frame.samples / frame.sample_rate
                if max_seconds is not None and decoded_s > max_seconds:
                    raise AudioTooLong(max_seconds)
                yield from resampler.feed(_frame_to_mono(frame), frame.sample_rate)
    except av.FFmpegError as e:
        raise AudioDecodeError() from e
    yield from resampler.flush()


def decode_audio(data: bytes, *, max_seconds: float | None = None) -> Audio:
    """Decode the first audio stream of a file to engine Audio (see `container_blocks`); a file with no
    samples raises EmptyAudio."""
    return _joined(container_blocks(data, max_seconds=max_seconds))


def pcm16_blocks(
    data: bytes | memoryview, *, sample_rate: int, channels: int = 1, max_seconds: float | None = None
) -> Iterator[np.ndarray]:
    """Raw little-endian interleaved PCM16, as engine-rate samples a block at a time."""
    _check_raw_layout(sample_rate, channels)
    frames = len(data) // (2 * channels)
    if frames == 0:
        raise EmptyAudio()
    if max_seconds is not None and frames / sample_rate > max_seconds:
        raise AudioTooLong(max_seconds)
    resampler = StreamResampler(sample_rate)
    block_bytes = RAW_BLOCK_FRAMES * 2 * channels
    for start in range(0, frames * 2 * channels, block_bytes):
        yield resampler.feed(pcm16_to_float(data[start : start + block_bytes], channels))
    yield resampler.flush()


def _check_raw_layout(sample_rate: int, channels: int) -> None:
    if not MIN_RAW_RATE_HZ <= sample_rate <= MAX_RAW_RATE_HZ:
        raise AudioDecodeError(
            f"raw PCM sample rate must be {MIN_RAW_RATE_HZ}..{MAX_RAW_RATE_HZ} Hz, got {sample_rate}"
        )
    if not 1 <= channels <= MAX_RAW_CHANNELS:
        raise AudioDecodeError(f"raw PCM channels must be 1..{MAX_RAW_CHANNELS}, got {channels}")


def decode_pcm16(
    data: bytes, *, sample_rate: int, channels: int = 1, max_seconds: float | None = None
) -> Audio:
    """Decode raw little-endian interleaved PCM16 to engine Audio."""
    return _joined(pcm16_blocks(data, sample_rate=sample_rate, channels=channels, max_seconds=max_seconds))


def _joined(blocks: Iterator[np.ndarray]) -> Audio:
    chunks = [block for block in blocks if len(block)]
    if not chunks:
        raise EmptyAudio("could not decode audio: the file holds no samples")
    return Audio(np.concatenate(chunks).astype(np.float32, copy=False))


def parse_raw_pcm_content_type(content_type: str | None) -> tuple[int, int] | None:
    """(sample_rate, channels) for a raw PCM16 content type such as `audio/L16; rate=8000`, else None."""
    if not content_type:
        return None
    media_type, *params = (part.strip() for part in content_type.split(";"))
    if media_type.lower() not in RAW_PCM_TYPES:
        return None
    values: dict[str, str] = {}
    for param in params:
        key, _, value = param.partition("=")
        values[key.strip().lower()] = value.strip().strip('"')
    rate = values.get("rate", values.get("sample_rate", str(DEFAULT_RAW_RATE_HZ)))
    channels = values.get("channels", "1")
    if not (rate.isdigit() and channels.isdigit()):
        raise AudioDecodeError(f"invalid raw PCM parameters in content type {content_type!r}")
    return int(rate), int(channels)


class _BytePipe:
    """A blocking, non-seekable file for PyAV: `read` waits for bytes fed from another thread, until EOF."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._eof = False
        self._ready = threading.Condition()
        self.starved = threading.Event()  # set while the reader waits for bytes nobody has fed yet

    def feed(self, data: bytes) -> None:
        with self._ready:
            self._chunks.append(data)
            self.starved.clear()
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._eof = True
            self._ready.notify()

    def read(self, size: int = -1) -> bytes:
        with self._ready:
            while not self._chunks and not self._eof:
                self.starved.set()
                self._ready.wait()
            if not self._chunks:
                return b""
            chunk = self._chunks.pop(0)
            if 0 < size < len(chunk):
                self._chunks.insert(0, chunk[size:])
                chunk = chunk[:size]
            return chunk


# A live stream's format is found from its first 64 KiB: garbage is refused early, not after megabytes.
_PROBE = {"probesize": str(64 * 1024), "formatprobesize": str(64 * 1024)}
# Past this much, a stream that has given no audio at all is taken as undecodable (a real one gives its first
# frames within a few KiB of its headers).
UNDECODABLE_AFTER_BYTES = 128 * 1024


class ContainerStream:
    """Decodes a live stream of container bytes (webm, ogg, mp4 ...) to 16 kHz PCM16 on a thread of its own.

    `feed` never blocks: it hands bytes to the decoder thread and returns the audio decoded so far. `settle`
    waits until every byte fed has been decoded (the decoder asks for more), `finish` until the stream ends.
    """

    def __init__(self, on_error: Callable[[AudioDecodeError], None] | None = None) -> None:
        self._pipe = _BytePipe()
        self._resampler = _Resampler()
        self._decoded: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._error: AudioDecodeError | None = None
        self._on_error = on_error
        self._fed_bytes = 0
        self._frames_decoded = 0
        self._thread = threading.Thread(target=self._decode, name="earshot-container-stream", daemon=True)
        self._thread.start()

    def _decode(self) -> None:
        try:
            with av.open(self._pipe, mode="r", metadata_errors="ignore", options=_PROBE) as container:
                if not container.streams.audio:
                    raise AudioDecodeError("could not decode audio: the stream has no audio")
                for frame in _frames(container, container.streams.audio[0]):
                    with self._lock:
                        self._frames_decoded += 1
                        self._decoded += self._resampler.feed(_frame_to_mono(frame), frame.sample_rate)
        except av.FFmpegError as e:
            self._fail(AudioDecodeError("could not decode audio: unsupported or corrupt stream"), e)
        except AudioDecodeError as e:
            self._fail(e)
        finally:
            self._pipe.starved.set()

    def _fail(self, error: AudioDecodeError, cause: BaseException | None = None) -> None:
        if cause is not None:
            error.__cause__ = cause
        self._error = error
        if self._on_error is not None:
            # From the decoder thread: the caller hears of it at once, not at its next feed.
            self._on_error(error)

    def _take(self, flush: bool = False) -> bytes:
        with self._lock:
            if flush:
                self._decoded += self._resampler.flush()
            chunks, self._decoded = self._decoded, []
        if self._error is not None and not chunks:
            raise self._error
        return float_to_pcm16(np.concatenate(chunks)) if chunks else b""

    def feed(self, data: bytes) -> bytes:
        """Queue `data` for the decoder; the PCM16 decoded so far (AudioDecodeError once decoding failed)."""
        if data:
            self._fed_bytes += len(data)
            self._pipe.feed(data)
        if (
            self._fed_bytes > UNDECODABLE_AFTER_BYTES
            and not self._frames_decoded
            and self._pipe.starved.is_set()
        ):
            # The decoder read all of it and found no audio: bytes some format half-matched, not audio.
            first_kib = UNDECODABLE_AFTER_BYTES // 1024
            raise AudioDecodeError(
                f"could not decode audio: no audio in the first {first_kib} KiB of the stream"
            )
        return self._take()

    async def settle(self, timeout_s: float = 1.0) -> bytes:
        """The PCM16 decoded once the decoder has used every byte fed (or `timeout_s` has passed)."""
        if not self._pipe.starved.is_set():
            await asyncio.to_thread(self._pipe.starved.wait, timeout_s)
        return self._take()

    async def finish(self, timeout_s: float = 2.0) -> bytes:
        """End the stream and return the rest of its PCM16."""
        self._pipe.close()
        await asyncio.to_thread(self._thread.join, timeout_s)
        return self._take(flush=True)

    def close(self) -> None:
        """Stop decoding (the thread ends at its next read)."""
        self._pipe.close()


async def _in_thread(decode: Callable[[], AudioT], limiter: asyncio.Semaphore | None) -> AudioT:
    """Run a decode in a worker thread, holding `limiter` while it runs."""
    if limiter is None:
        return await asyncio.to_thread(decode)
    async with limiter:
        return await asyncio.to_thread(decode)


async def encoded_audio_async(
    read: Callable[[], Iterator[np.ndarray]], *, limiter: asyncio.Semaphore | None = None
) -> EncodedAudio:
    """Audio kept encoded, read by `read` (e.g. `partial(container_blocks, data)`): decoded once now, in a
    worker thread, to count it and to raise what the decoder raises; its samples are decoded again when
    read."""
    audio = await _in_thread(partial(EncodedAudio.counted, read), limiter)
    if audio.duration_s <= 0:
        raise EmptyAudio("could not decode audio: the file holds no samples")
    return audio


async def pcm16_audio_async(
    data: bytes | memoryview,
    *,
    sample_rate: int,
    channels: int = 1,
    max_seconds: float | None = None,
    limiter: asyncio.Semaphore | None = None,
    declared_frames: int = 0,
) -> EncodedAudio:
    """Raw PCM16 (or a WAV file's samples) kept as it came, counted by its length where that is exact.

    16 kHz mono is engine PCM already: it is counted by its length and never decoded to be counted. Other
    rates and layouts are counted by resampling them, on the event loop when small (a thread hop would cost
    more than the count), else in a worker thread. `declared_frames` is what a header claims: over the limit,
    the audio is refused on its word, as the container decoder does.
    """
    _check_raw_layout(sample_rate, channels)
    frames = len(data) // (2 * channels)
    if frames == 0:
        raise EmptyAudio()
    if max_seconds is not None and max(frames, declared_frames) / sample_rate > max_seconds:
        raise AudioTooLong(max_seconds)
    read = partial(pcm16_blocks, data, sample_rate=sample_rate, channels=channels, max_seconds=max_seconds)
    if sample_rate == ENGINE_RATE_HZ and channels == 1:
        return EncodedAudio(read, frames, engine_pcm16=memoryview(data)[: frames * 2])
    if len(data) > INLINE_COUNT_BYTES:
        return await encoded_audio_async(read, limiter=limiter)
    audio = EncodedAudio.counted(read)
    if audio.duration_s <= 0:
        raise EmptyAudio("could not decode audio: the file holds no samples")
    return audio


async def decode_audio_async(
    data: bytes, *, max_seconds: float | None = None, limiter: asyncio.Semaphore | None = None
) -> Audio:
    """decode_audio in a worker thread, bounded by an optional semaphore."""
    return await _in_thread(partial(decode_audio, data, max_seconds=max_seconds), limiter)


async def decode_pcm16_async(
    data: bytes,
    *,
    sample_rate: int,
    channels: int = 1,
    max_seconds: float | None = None,
    limiter: asyncio.Semaphore | None = None,
) -> Audio:
    """decode_pcm16 in a worker thread, bounded by an optional semaphore."""
    decode = partial(decode_pcm16, data, sample_rate=sample_rate, channels=channels, max_seconds=max_seconds)
    return await _in_thread(decode, limiter)
