"""Engine work in worker processes, so CPU-bound decoding never blocks the event loop and uses every core.

Each worker is its own single-process executor. A one-shot task goes to an idle worker; a live stream keeps
its decoder state inside one worker and sends every call there (`run_on`).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import wait
from pathlib import Path
from typing import ParamSpec, TypeVar

from earshot.engines.base import EngineError

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger(__name__)
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class WorkerPool:
    """A fixed number of engine worker processes with bounded concurrent one-shot work."""

    def __init__(self, size: int, max_rss_mb: int | None = None) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self._max_rss_mb = max_rss_mb
        self._context = multiprocessing.get_context("spawn")
        self._executors = [self._new_executor() for _ in range(size)]
        self._busy = [0] * size
        self._pinned_streams = [0] * size
        self._idle_slots = _Slots(size)

    @property
    def size(self) -> int:
        """Number of worker processes."""
        return len(self._executors)

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1, mp_context=self._context, initializer=_exit_with_parent)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` in the least busy worker, waiting while every worker is busy."""
        return await self._run(False, fn, *args, **kwargs)

    async def run_urgent(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`run`, ahead of every waiting `run`: a live decode never queues behind an upload's pieces."""
        return await self._run(True, fn, *args, **kwargs)

    async def _run(self, urgent: bool, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        await self._idle_slots.acquire(urgent)
        try:
            worker = min(range(self.size), key=lambda i: (self._busy[i], self._pinned_streams[i]))
            return await self.run_on(worker, fn, *args, **kwargs)
        finally:
            self._idle_slots.release()

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
            self._recycle_if_too_big(worker)

    def _recycle_if_too_big(self, worker: int) -> None:
        """Replace a worker past `max_rss_mb` once nothing runs or lives in it (a guard against leaks in the
        engines' native code; its models load again on first use)."""
        if self._max_rss_mb is None or self._busy[worker] or self._pinned_streams[worker]:
            return
        executor = self._executors[worker]
        rss_mb = _rss_mb(executor)
        if rss_mb is None or rss_mb <= self._max_rss_mb:
            return
        log.warning(
            "engine worker %d uses %.0f MB (limit %d MB); replacing it", worker, rss_mb, self._max_rss_mb
        )
        self._executors[worker] = self._new_executor()
        executor.shutdown(wait=False, cancel_futures=True)

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


class _Slots:
    """A semaphore whose urgent waiters are woken before the others (each kind first come, first served)."""

    def __init__(self, count: int) -> None:
        self._free = count
        self._waiting: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (deque(), deque())

    async def acquire(self, urgent: bool) -> None:
        if self._free and not any(self._waiting):
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        queue = self._waiting[0 if urgent else 1]
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # woken and cancelled at once: pass the slot on
            else:
                queue.remove(waiter)
            raise

    def release(self) -> None:
        for queue in self._waiting:
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._free += 1


def _call(fn: Callable[..., T], args: tuple[object, ...], kwargs: dict[str, object]) -> T:
    try:
        return fn(*args, **kwargs)
    finally:
        _give_back_freed_memory()


# glibc keeps what a decode freed in its per-thread arenas, so a worker's RSS climbs to the largest mix of
# buffers it ever held; trimming hands the free pages back. At most once a second: a live stream's calls are
# many and small.
TRIM_INTERVAL_S = 1.0
_last_trim_s = 0.0


def _give_back_freed_memory() -> None:
    global _last_trim_s
    now = time.monotonic()
    if now - _last_trim_s < TRIM_INTERVAL_S:
        return
    _last_trim_s = now
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(None)
        return libc.malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def _rss_mb(executor: ProcessPoolExecutor) -> float | None:
    """The resident memory of an executor's one process, from /proc (None where that can't be read)."""
    processes = getattr(executor, "_processes", None) or {}
    for pid in list(processes):
        try:
            resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return resident_pages * PAGE_BYTES / 2**20
    return None


def _exit_with_parent() -> None:
    """In a worker: exit when the process that started it dies (killed, say) instead of living on orphaned."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="earshot-parent-watch", daemon=True).start()
