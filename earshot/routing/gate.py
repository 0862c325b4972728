"""A per-provider concurrency gate: at most N calls at once, a bounded queue behind them for a bounded time,
then 'busy' with a retry hint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ServerBusy(Exception):
    """Every slot of a provider is taken and its queue is full."""

    def __init__(self, model_id: str, retry_after_s: float = 1.0) -> None:
        super().__init__(f"model {model_id!r} is busy; try again shortly")
        self.model_id = model_id
        self.retry_after_s = retry_after_s


class ConcurrencyGate:
    """Admits `max_concurrency` holders at once (None: unbounded) and queues up to `max_queue` more."""

    def __init__(
        self, model_id: str, max_concurrency: int | None, max_queue: int, max_wait_s: float = 30.0
    ) -> None:
        self.model_id = model_id
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.max_wait_s = max_wait_s
        self.refused = 0
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency is not None else None
        self.active = 0
        self.waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the body; raises ServerBusy at once when the queue is full."""
        if self._slots is None:
            self.active += 1
            try:
                yield
            finally:
                self.active -= 1
            return
        if self._slots.locked() and self.waiting >= self.max_queue:
            self.refused += 1
            raise ServerBusy(self.model_id, self._retry_after_s())
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self.max_wait_s)
        except TimeoutError:
            self.refused += 1
            raise ServerBusy(self.model_id, self._retry_after_s()) from None
        finally:
            self.waiting -= 1
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            self._slots.release()

    def _retry_after_s(self) -> float:
        # A second per request waiting ahead, at most what a queued request waits, at least 1 s.
        return max(1.0, min(self.max_wait_s, float(self.waiting)))
