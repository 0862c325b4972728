"""PinnedStream: a live stream whose recognizer lives in one worker process, from first audio to close.

Each engine says how its worker-side state is opened, fed, finalized and closed; the pinning, the order of
calls and the results queue are here.
"""

from __future__ import annotations

import asyncio
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from earshot.audio.pcm import Audio
from earshot.engines.base import EngineError
from earshot.engines.result_queue import ResultQueue
from earshot.engines.results import EngineResult, Flushed
from earshot.engines.workers import WorkerPool


class PinnedStream(ABC):
    """An EngineStream whose state lives in the worker chosen by `WorkerPool.pin_stream`."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._id = uuid.uuid4().hex
        self._worker: int | None = None
        self._results = ResultQueue()
        self._lock = asyncio.Lock()
        self._closed = False

    @abstractmethod
    async def _open_on(self, worker: int) -> None:
        """Create this stream's state (named by `self._id`) in `worker`."""

    @abstractmethod
    async def _feed_on(self, worker: int, pcm16: bytes) -> list[EngineResult]:
        """Recognise more audio in `worker`; the results it gives."""

    @abstractmethod
    async def _finalize_on(self, worker: int) -> list[EngineResult]:
        """End the utterance in progress in `worker`; its results."""

    @abstractmethod
    async def _close_on(self, worker: int) -> None:
        """Forget this stream's state in `worker`."""

    async def _ensure_open(self) -> int:
        if self._worker is None:
            worker = self._pool.pin_stream()
            try:
                await self._open_on(worker)
            except BaseException:
                self._pool.unpin_stream(worker)
                raise
            self._worker = worker
        return self._worker

    async def send(self, audio: Audio) -> None:
        """Feed more audio; the results it gives are queued on `results()`."""
        async with self._lock:
            if self._closed:
                raise EngineError("the stream is closed")
            worker = await self._ensure_open()
            self._results.put_all(await self._feed_on(worker, audio.pcm16()))

    async def finalize(self) -> None:
        """End the utterance in progress as a Final, then mark the flush."""
        async with self._lock:
            if self._closed:
                return
            if self._worker is not None:
                self._results.put_all(await self._finalize_on(self._worker))
            self._results.put(Flushed())

    async def close(self) -> None:
        """Finalize, release the worker-side state and end `results()`."""
        if self._closed:
            return
        await self.finalize()
        async with self._lock:
            self._closed = True
            if self._worker is not None:
                try:
                    await self._close_on(self._worker)
                finally:
                    self._pool.unpin_stream(self._worker)
            self._results.end()

    async def abort(self) -> None:
        """Release the worker-side state without a final decode and end `results()`."""
        if self._closed:
            return
        self._closed = True
        self._results.end()
        async with self._lock:
            if self._worker is not None:
                worker, self._worker = self._worker, None
                try:
                    await self._close_on(worker)
                finally:
                    self._pool.unpin_stream(worker)

    def results(self) -> AsyncIterator[EngineResult]:
        """Partial, Final and Flushed results until the stream is closed."""
        return self._results.results()
