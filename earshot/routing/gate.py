"""A per-provider concurrency gate: at most N calls at once, a bounded queue behind them for a bounded time,
then 'busy' with a retry hint. A caller that wants to know its place in the queue watches it
(`watching_queue`): every gate on its call path tells the watcher its position as it changes, and when the
call takes a slot. A watched call may also be more patient than the gate's own wait: a caller kept informed of
its place (a streamed transcript) can wait for as long as its watch says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol


class ServerBusy(Exception):
    """Every slot of a provider is taken and its queue is full."""

    def __init__(self, model_id: str, retry_after_s: float = 1.0) -> None:
        super().__init__(f"model {model_id!r} is busy; try again shortly")
        self.model_id = model_id
        self.retry_after_s = retry_after_s


class QueueWatcher(Protocol):
    """Told where a waiting call stands in a gate's queue."""

    def queued(self, position: int) -> None:
        """The call waits with `position - 1` calls ahead of it (1: next in line); told again on each move."""

    def admitted(self) -> None:
        """The call took a slot (at once, or after waiting) and its work starts."""


@dataclass(frozen=True, slots=True)
class _Watch:
    """Who is told a call's queue positions, and how long the call may wait in a queue (None: the gate's)."""

    watcher: QueueWatcher
    max_wait_s: float | None


# The watch over the calls made in this context (a task and what it awaits); None: nobody asks.
_watch: ContextVar[_Watch | None] = ContextVar("earshot_queue_watch", default=None)


@contextmanager
def watching_queue(watcher: QueueWatcher, max_wait_s: float | None = None) -> Iterator[None]:
    """Report the queue positions of the gated calls made inside the block (in this task) to `watcher`.

    With `max_wait_s`, those calls wait in a queue up to that long where the gate's own wait is shorter.
    """
    token = _watch.set(_Watch(watcher, max_wait_s))
    try:
        yield
    finally:
        _watch.reset(token)


def _watcher() -> QueueWatcher | None:
    watch = _watch.get()
    return watch.watcher if watch is not None else None


class _Waiter:
    """One call in a gate's queue, with the watcher to tell and the position it was last told."""

    __slots__ = ("told", "watcher")

    def __init__(self, watcher: QueueWatcher | None) -> None:
        self.watcher = watcher
        self.told = 0


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
        # The calls waiting for a slot, first in line first (asyncio's semaphore wakes waiters in order).
        self._line: list[_Waiter] = []

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot now."""
        return len(self._line)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the body; raises ServerBusy at once when the queue is full."""
        slots = self._slots
        if slots is None:
            pass  # unbounded: no slot to take
        elif not slots.locked():
            # A free slot (and nobody waiting for it) is taken at once, without queueing.
            await slots.acquire()
        else:
            await self._wait_in_line(slots)
        self._admitted()
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            if slots is not None:
                slots.release()

    async def _wait_in_line(self, slots: asyncio.Semaphore) -> None:
        if self.waiting >= self.max_queue:
            self.refused += 1
            raise ServerBusy(self.model_id, self._retry_after_s())
        waiter = _Waiter(_watcher())
        self._line.append(waiter)
        self._tell_positions()
        watch = _watch.get()
        wait_s = self.max_wait_s
        if watch is not None and watch.max_wait_s is not None:
            wait_s = max(wait_s, watch.max_wait_s)
        try:
            await asyncio.wait_for(slots.acquire(), wait_s)
        except TimeoutError:
            self.refused += 1
            raise ServerBusy(self.model_id, self._retry_after_s()) from None
        finally:
            self._line.remove(waiter)
            self._tell_positions()

    @staticmethod
    def _admitted() -> None:
        watcher = _watcher()
        if watcher is not None:
            watcher.admitted()

    def position_of(self, watcher: QueueWatcher) -> int | None:
        """Where `watcher`'s call waits in the queue (1: next in line); None when it does not wait here."""
        for position, waiter in enumerate(self._line, start=1):
            if waiter.watcher is watcher:
                return position
        return None

    def _tell_positions(self) -> None:
        for position, waiter in enumerate(self._line, start=1):
            if waiter.watcher is not None and waiter.told != position:
                waiter.told = position
                waiter.watcher.queued(position)

    def _retry_after_s(self) -> float:
        # A second per request waiting ahead, at most what a queued request waits, at least 1 s.
        return max(1.0, min(self.max_wait_s, float(self.waiting)))
