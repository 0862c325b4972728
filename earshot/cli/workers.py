"""`earshot serve --workers N`: how many gateway processes to run, and the supervisor that keeps them running.

The supervisor binds the port once and hands the socket to N spawned gateway processes; the kernel spreads
connections over them. Each process is a whole gateway (its own app, engine worker pool and live capacity);
what they must agree on (keys, usage, limits, dials, revocation, session and turn locks) goes through the
store and Redis, which is why more than one worker needs `EARSHOT_REDIS_URL`.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from sqlalchemy.engine import make_url

from earshot.settings import Settings, cpu_count

log = logging.getLogger("earshot.workers")

# uvicorn's exit status for a server that never started serving (bad app, database down, port taken): such a
# worker would fail the same way on every restart, so the supervisor stops instead.
STARTUP_FAILURE = 3
# A worker that keeps dying this soon after it was started is not restarted again.
CRASH_LOOP_S = 10.0
CRASH_LOOP_LIMIT = 5


class WorkersRefused(Exception):
    """The asked-for number of workers cannot share this configuration's state."""


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """How many gateway processes run, and the settings each of them serves with."""

    gateways: int
    worker_settings: Settings
    note: str | None = None


def plan_workers(settings: Settings) -> WorkerPlan:
    """The gateway processes for these settings, each with its share of engine workers and decodes.

    Unset `workers` means one per core when Redis is configured and one without it; an explicit number above
    one without Redis (or on an in-memory SQLite database) is refused, since limits, session locks and
    revocation would then hold per process only.
    """
    note = None
    if settings.workers is None:
        gateways = cpu_count() if settings.redis_url else 1
        if not settings.redis_url and cpu_count() > 1:
            note = "serving with 1 worker: several workers need EARSHOT_REDIS_URL to share limits and locks"
    else:
        gateways = settings.workers
        if gateways > 1 and not settings.redis_url:
            raise WorkersRefused(
                f"--workers {gateways} needs EARSHOT_REDIS_URL: rate limits, session limits, turn locks and "
                "key revocation are shared between workers through Redis (without it each worker would "
                "enforce its own); set it, or serve with --workers 1"
            )
        if gateways > 1 and _in_memory_sqlite(settings.database_url):
            raise WorkersRefused(
                f"--workers {gateways} needs a database file or PostgreSQL: each worker would get its own "
                "in-memory SQLite database"
            )
    worker_settings = settings.model_copy(
        update={
            "workers": gateways,
            # The engine processes and decode threads are shared out, so N workers use the machine as one did.
            "engine_workers": max(1, settings.engine_workers // gateways),
            "decode_concurrency": max(1, settings.decode_concurrency // gateways),
        }
    )
    return WorkerPlan(gateways, worker_settings, note)


def _in_memory_sqlite(url: str) -> bool:
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


class Supervisor:
    """Runs `count` copies of `serve(sockets)` in spawned processes on one bound socket.

    SIGTERM or SIGINT is passed on to every worker, which drains its own live sessions (DrainingServer) and
    exits; the supervisor waits for them all. A worker that dies otherwise is logged and replaced.
    """

    def __init__(
        self, count: int, bound: socket.socket, serve: Callable[[list[socket.socket]], None]
    ) -> None:
        self.count = count
        self.bound = bound
        self.serve = serve
        self.stopping = False
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[BaseProcess] = []
        self._early_deaths = 0

    def run(self, stop_timeout_s: float) -> int:
        """Serve until told to stop; the exit status (0, or STARTUP_FAILURE when workers could not start)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        log.info("earshot supervisor [%d]: starting %d workers", _pid(), self.count)
        self._workers = [self._start() for _ in range(self.count)]
        status = 0
        while not self.stopping:
            wait([worker.sentinel for worker in self._workers], timeout=0.5)
            status = self._replace_dead()
            if status:
                self.stopping = True
        self._stop_all(stop_timeout_s)
        return status

    def _start(self) -> BaseProcess:
        worker = self._context.Process(target=self.serve, args=([self.bound],), name="earshot-worker")
        worker.start()
        worker.started_at = time.monotonic()  # type: ignore[attr-defined]
        log.info("earshot worker [%s] started", worker.pid)
        return worker

    def _replace_dead(self) -> int:
        for index, worker in enumerate(self._workers):
            if worker.is_alive() or self.stopping:
                continue
            worker.join()
            if worker.exitcode == STARTUP_FAILURE:
                log.error("earshot worker [%s] failed to start; stopping", worker.pid)
                return STARTUP_FAILURE
            lived_s = time.monotonic() - worker.started_at  # type: ignore[attr-defined]
            self._early_deaths = self._early_deaths + 1 if lived_s < CRASH_LOOP_S else 0
            if self._early_deaths >= CRASH_LOOP_LIMIT:
                log.error("earshot workers keep dying within %.0f s of starting; stopping", CRASH_LOOP_S)
                return STARTUP_FAILURE
            log.error("earshot worker [%s] died (exit %s); starting another", worker.pid, worker.exitcode)
            self._workers[index] = self._start()
        return 0

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def _stop_all(self, timeout_s: float) -> None:
        for worker in self._workers:
            if worker.is_alive():
                # SIGTERM: each worker drains its live sessions as a single server does.
                worker.terminate()
        deadline = time.monotonic() + timeout_s
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                log.error("earshot worker [%s] did not stop in %.0f s; killing it", worker.pid, timeout_s)
                worker.kill()
                worker.join()
        log.info("earshot supervisor [%d]: stopped", _pid())


def _pid() -> int:
    return multiprocessing.current_process().pid or 0
