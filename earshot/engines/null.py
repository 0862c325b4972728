"""The null engine: hears nothing, instantly. For load tests of the gateway and for wiring checks."""

from __future__ import annotations

from collections.abc import AsyncIterator

from earshot.audio.pcm import Audio
from earshot.engines.base import Segment, TranscribeOptions
from earshot.engines.result_queue import ResultQueue
from earshot.engines.results import EngineResult, Flushed


class NullEngine:
    """An engine whose every transcript is empty; it costs nothing, so what is measured is earshot."""

    language = "en"
    # It reads no samples, so an upload kept encoded is handed over as it is, never decoded for it.
    reads_encoded_audio = True

    def __init__(self, name: str = "null") -> None:
        self.name = name
        self.ready = False

    async def start(self) -> None:
        self.ready = True

    async def stop(self) -> None:
        self.ready = False

    async def transcribe_segments(self, audio: Audio, options: TranscribeOptions) -> AsyncIterator[Segment]:
        """No segments."""
        return
        yield

    def open_stream(self, options: TranscribeOptions) -> NullStream:
        """A stream that only acknowledges flushes."""
        return NullStream()


class NullStream:
    """Takes audio and gives back only a Flushed for each finalize."""

    def __init__(self) -> None:
        self._results = ResultQueue()

    async def send(self, audio: Audio) -> None:
        """Drop the audio."""

    async def finalize(self) -> None:
        """Nothing to finalize but the flush mark."""
        self._results.put(Flushed())

    async def close(self) -> None:
        """End `results()`."""
        self._results.end()

    def results(self) -> AsyncIterator[EngineResult]:
        """Flushed marks until closed."""
        return self._results.results()
