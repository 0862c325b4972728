"""ResultQueue: what an EngineStream's `results()` reads, ended by the stream's close or its first error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from earshot.engines.base import EngineError
from earshot.engines.results import EngineResult


class ResultQueue:
    """A stream's results in order; once it has failed or ended, more are dropped (no one would read them)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[EngineResult | EngineError | None] = asyncio.Queue()
        self.error: EngineError | None = None
        self.ended = False

    def put(self, result: EngineResult) -> None:
        """Queue one result."""
        if self.error is None and not self.ended:
            self._queue.put_nowait(result)

    def put_all(self, results: Iterable[EngineResult]) -> None:
        """Queue results in order."""
        for result in results:
            self.put(result)

    def fail(self, error: EngineError) -> bool:
        """End `results()` by raising `error` unless the stream already failed or ended; whether it did."""
        if self.error is not None or self.ended:
            return False
        self.error = error
        self._queue.put_nowait(error)
        return True

    def end(self) -> None:
        """End `results()` after what is queued."""
        if not self.ended:
            self.ended = True
            self._queue.put_nowait(None)

    def raise_if_failed(self) -> None:
        """Raise the error that ended the stream, if one did."""
        if self.error is not None:
            raise self.error

    async def results(self) -> AsyncIterator[EngineResult]:
        """The queued results until the end; raises the error that ended the stream."""
        while (result := await self._queue.get()) is not None:
            if isinstance(result, EngineError):
                raise result
            yield result
