"""Where audio comes from: a file (at real-time pace or as fast as the server takes it), stdin, a microphone.

Every source yields PCM16 little-endian chunks at its `sample_rate` and `channels`, and only starts capturing
when it is iterated, so a transcriber can wait for the server before any audio is taken.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from earshot.audio.decode import decode_audio

DEFAULT_CHUNK_MS = 100


class AudioSource(Protocol):
    """Captured audio as PCM16 chunks."""

    sample_rate: int
    channels: int

    def chunks(self) -> AsyncIterator[bytes]:
        """Start capturing and yield chunks until the source ends."""
        ...


class FileSource:
    """Any audio file FFmpeg reads, decoded to 16 kHz mono, at real-time pace or as fast as allowed."""

    sample_rate = 16_000
    channels = 1

    def __init__(self, path: Path | str, *, realtime: bool = True, chunk_ms: int = DEFAULT_CHUNK_MS) -> None:
        self.path = Path(path)
        self.realtime = realtime
        self.chunk_ms = chunk_ms

    async def pcm16(self) -> bytes:
        """The whole file as PCM16 (read, decoded and converted in one worker thread)."""
        return await asyncio.to_thread(lambda: decode_audio(self.path.read_bytes()).pcm16())

    async def chunks(self) -> AsyncIterator[bytes]:
        """The file in `chunk_ms` pieces; paced like a live speaker when `realtime`."""
        pcm = await self.pcm16()
        step = self.sample_rate * 2 * self.chunk_ms // 1000
        started = time.monotonic()
        for index, offset in enumerate(range(0, len(pcm), step)):
            yield pcm[offset : offset + step]
            if self.realtime:
                delay = started + (index + 1) * self.chunk_ms / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)


class StdinSource:
    """Raw PCM16 little-endian from a byte stream (stdin by default) until it ends."""

    def __init__(
        self,
        *,
        sample_rate: int = 16_000,
        channels: int = 1,
        stream: BinaryIO | None = None,
        chunk_ms: int = DEFAULT_CHUNK_MS,
    ) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.chunk_ms = chunk_ms
        self._stream = stream

    async def chunks(self) -> AsyncIterator[bytes]:
        """Chunks of about `chunk_ms` as the stream delivers them."""
        stream = self._stream if self._stream is not None else sys.stdin.buffer
        size = self.sample_rate * 2 * self.channels * self.chunk_ms // 1000
        while True:
            chunk = await asyncio.to_thread(stream.read, size)
            if not chunk:
                return
            yield chunk


class MicrophoneUnavailable(RuntimeError):
    """The microphone can't be opened (the `mic` extra is not installed, or no input device)."""


class MicrophoneSource:
    """The default (or a named) input device, through sounddevice (`pip install earshot[mic]`)."""

    def __init__(
        self,
        *,
        sample_rate: int = 16_000,
        channels: int = 1,
        device: int | str | None = None,
        chunk_ms: int = DEFAULT_CHUNK_MS,
    ) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.device = device
        self.chunk_ms = chunk_ms

    @staticmethod
    def check() -> None:
        """MicrophoneUnavailable unless sounddevice (and PortAudio under it) can be loaded."""
        _sounddevice()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Chunks of `chunk_ms` from the device's callback thread, until the consumer stops."""
        sounddevice = _sounddevice()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        def captured(data: object, frames: int, when: object, status: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, bytes(data))  # type: ignore[call-overload]

        try:
            stream = sounddevice.RawInputStream(
                samplerate=self.sample_rate,
                channels=self.channels,
                dtype="int16",
                blocksize=self.sample_rate * self.chunk_ms // 1000,
                device=self.device,
                callback=captured,
            )
        except sounddevice.PortAudioError as e:
            raise MicrophoneUnavailable(f"the microphone can't be opened: {e}") from e
        with stream:
            while True:
                yield await queue.get()


def _sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as e:
        raise MicrophoneUnavailable(
            "microphone capture needs sounddevice and PortAudio: pip install 'earshot[mic]'"
        ) from e
    return sounddevice
