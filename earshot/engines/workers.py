"""Engine work in worker processes, so CPU-bound decoding never blocks the event loop and uses every core.

Each worker is its own single-process executor. A one-shot task goes to an idle worker; a live stream keeps
its decoder state inside one worker and sends every call there (`run_on`).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import ParamSpec, TypeVar

from earshot.engines.base import EngineError

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger(__name__)


class WorkerPool:
    """A fixed number of engine worker processes with bounded concurrent one-shot work."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self._context = multiprocessing.get_context("spawn")
        self._executors = [self._new_executor() for _ in range(size)]
        self._busy = [0] * size
        self._pinned_streams = [0] * size
        self._idle_slots = asyncio.Semaphore(size)

    @property
    def size(self) -> int:
        """Number of worker processes."""
        return len(self._executors)

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1, mp_context=self._context)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` in the least busy worker, waiting while every worker is busy."""
        async with self._idle_slots:
            worker = min(range(self.size), key=lambda i: (self._busy[i], self._pinned_streams[i]))
            return await self.run_on(worker, fn, *args, **kwargs)

    async def run_on(self, worker: int, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` in one given worker (where a stream's state lives)."""
        loop = asyncio.get_running_loop()
        self._busy[worker] += 1
        try:
            return await loop.run_in_executor(self._executors[worker], _call, fn, args, kwargs)
        except BrokenProcessPool as e:
            log.error("engine worker %d died; starting a new one", worker)
            self._executors[worker].shutdown(wait=False, cancel_futures=True)
            self._executors[worker] = self._new_executor()
            raise EngineError("the engine worker stopped unexpectedly") from e
        finally:
            self._busy[worker] -= 1

    def pin_stream(self) -> int:
        """Choose the worker for a new live stream; release it with `unpin_stream`."""
        worker = min(range(self.size), key=lambda i: (self._pinned_streams[i], self._busy[i]))
        self._pinned_streams[worker] += 1
        return worker

    def unpin_stream(self, worker: int) -> None:
        """A stream placed by `pin_stream` has ended."""
        self._pinned_streams[worker] -= 1

    async def on_every_worker(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> list[T]:
        """Run `fn` once in each worker, e.g. to load a model everywhere before serving."""
        return list(await asyncio.gather(*(self.run_on(i, fn, *args, **kwargs) for i in range(self.size))))

    def shutdown(self) -> None:
        """Stop every worker process, dropping queued work."""
        for executor in self._executors:
            executor.shutdown(wait=True, cancel_futures=True)


def _call(fn: Callable[..., T], args: tuple[object, ...], kwargs: dict[str, object]) -> T:
    return fn(*args, **kwargs)
