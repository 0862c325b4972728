"""The worker pool: a worker past `max_worker_rss_mb` is replaced between jobs, urgent work goes first."""

from __future__ import annotations

import os

from earshot.engines.workers import WorkerPool

_hoard: list[bytearray] = []


def grow_by_mb(megabytes: int) -> int:
    """Hold on to `megabytes` more of memory in this worker (as a leak would); its pid."""
    _hoard.append(bytearray(os.urandom(1024)) * (megabytes * 1024))
    return os.getpid()


def pid() -> int:
    return os.getpid()


async def test_a_worker_past_its_memory_limit_is_replaced_after_its_job() -> None:
    pool = WorkerPool(1, max_rss_mb=150)
    try:
        first = await pool.run(pid)
        assert await pool.run(grow_by_mb, 10) == first, "under the limit the worker stays"
        assert await pool.run(grow_by_mb, 300) == first
        assert await pool.run(pid) != first, "past the limit the next job runs in a new worker"
    finally:
        pool.shutdown()


async def test_a_worker_holding_a_live_stream_is_kept_whatever_its_size() -> None:
    pool = WorkerPool(1, max_rss_mb=150)
    try:
        worker = pool.pin_stream()
        first = await pool.run_on(worker, grow_by_mb, 300)
        assert await pool.run_on(worker, pid) == first, "a stream's state lives there"
        pool.unpin_stream(worker)
        await pool.run_on(worker, pid)
        assert await pool.run(pid) != first
    finally:
        pool.shutdown()


def nap(seconds: float, label: str) -> str:
    import time

    time.sleep(seconds)
    return label


async def test_urgent_work_runs_before_work_that_was_waiting_longer() -> None:
    import asyncio

    pool = WorkerPool(1)
    try:
        order: list[str] = []

        async def run(label: str, urgent: bool) -> None:
            submit = pool.run_urgent if urgent else pool.run
            order.append(await submit(nap, 0.2, label))

        await pool.run(pid)  # the worker is up
        busy = asyncio.create_task(run("running", False))
        await asyncio.sleep(0.05)
        waiting = [asyncio.create_task(run(f"piece {n}", False)) for n in range(3)]
        await asyncio.sleep(0.05)
        live = asyncio.create_task(run("live", True))
        await asyncio.gather(busy, *waiting, live)
        assert order == ["running", "live", "piece 0", "piece 1", "piece 2"]
    finally:
        pool.shutdown()
