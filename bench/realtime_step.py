"""One step of the realtime bench: N sessions against a fresh server, which is sampled over the window."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import httpx
import psutil
from realtime_load import (
    OPEN_TIMEOUT_S,
    REALTIME_PATH,
    BenchFailed,
    SessionLog,
    SpeechLoop,
    client_processes,
    model_update,
    receive,
)
from realtime_results import Sample, Step, analyse
from serving import earshot_server, engine_workers, fresh_database
from websockets.asyncio.client import connect

READY_TIMEOUT_S = 120.0
IDLE_SETTLE_S = 1.0
RAMP_TIMEOUT_S = 120.0
CLIENT_JOIN_TIMEOUT_S = 60.0
LOG_PROBLEM = re.compile(r"\b(ERROR|WARNING|CRITICAL)\b")
EXPECTED_WARNING = "no API keys exist"


def _cpu_s(process: psutil.Process) -> float:
    with contextlib.suppress(psutil.NoSuchProcess):
        times = process.cpu_times()
        return float(times.user + times.system)
    return 0.0


def _main_thread_cpu_s(process: psutil.Process) -> float:
    with contextlib.suppress(psutil.NoSuchProcess):
        for thread in process.threads():
            if thread.id == process.pid:
                return float(thread.user_time + thread.system_time)
    return 0.0


def _rss(process: psutil.Process) -> int:
    with contextlib.suppress(psutil.NoSuchProcess):
        rss: int = process.memory_info().rss
        return rss
    return 0


def sample(server: psutil.Process, clients: Sequence[psutil.Process]) -> Sample:
    workers = server.children(recursive=True)
    engines = sorted(engine_workers(server), key=lambda process: process.pid)
    machine = psutil.cpu_times()
    return Sample(
        at=time.monotonic(),
        gateway_cpu_s=_cpu_s(server),
        loop_cpu_s=_main_thread_cpu_s(server),
        engine_cpu_s=sum(_cpu_s(worker) for worker in workers),
        client_cpu_s=sum(_cpu_s(client) for client in clients),
        machine_busy_s=sum(machine) - machine.idle - getattr(machine, "iowait", 0.0),
        gateway_rss=_rss(server),
        engine_rss=sum(_rss(worker) for worker in workers),
        worker_rss=tuple(_rss(worker) for worker in engines),
    )


def wait_ready(base_url: str, process: psutil.Process) -> None:
    """Poll /readyz until the engines are loaded."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=base_url, timeout=5) as client:
        while time.monotonic() < deadline:
            if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
                raise BenchFailed("the server exited before it was ready")
            with contextlib.suppress(httpx.TransportError):
                if client.get("/readyz").status_code == 200:
                    return
            time.sleep(0.1)
    raise BenchFailed(f"the server was not ready within {READY_TIMEOUT_S:g} s")


async def warm_up(base_url: str, loop: SpeechLoop, setup: tuple[bytes, ...]) -> None:
    """One short session, sent as fast as it goes, so the VAD and the engine's stream path are loaded."""
    url = base_url.replace("http://", "ws://") + REALTIME_PATH
    async with connect(url, compression=None, ping_interval=None, open_timeout=OPEN_TIMEOUT_S) as ws:
        for message in (*setup, *loop.messages[: 5000 // loop.chunk_ms]):
            await ws.send(message, text=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):
                async for reply in ws:
                    if isinstance(reply, str) and "transcription.completed" in reply:
                        break


def log_problems(log: IO[bytes]) -> tuple[list[str], str]:
    """The server log's warning and error lines (timestamps cut, counted) and its first traceback."""
    log.seek(0)
    counts: Counter[str] = Counter()
    traceback: list[str] = []
    in_traceback = False
    for line in log.read().decode(errors="replace").splitlines():
        if line.startswith("Traceback") and not traceback:
            in_traceback = True
        if in_traceback:
            traceback.append(line)
            in_traceback = line.startswith((" ", "Traceback", "The above", "During handling")) or not line
        elif LOG_PROBLEM.search(line) and EXPECTED_WARNING not in line:
            counts[re.sub(r"^\S+ \S+ ", "", line)[:200]] += 1
    return [f"{n} x {line}" for line, n in counts.most_common(5)], "\n".join(traceback)


def run_step(
    mode: str, sessions: int, loop: SpeechLoop, args: argparse.Namespace, config: Path | None
) -> Step:
    """N sessions against a fresh server for a warm-up and a measurement window.

    Mode "null" serves the catalog at `config` (its default model); mode "engine" serves the default catalog
    and every session asks for `args.model` with a `session.update` before its first audio.
    """
    engine = mode == "engine"
    model = args.model if engine else "null"
    max_completed_ms = args.max_completed_s * 1000 if engine else math.inf
    window_s = args.engine_window_s if engine else args.window_s
    step = Step(mode, model, sessions, window_s, max_completed_ms)
    grace_s = args.max_completed_s + 1.0 if engine else 1.0
    workers = str(args.engine_workers) if engine else "1"
    setup = (model_update(args.model),) if engine else ()
    name = f"{mode}-{args.model}-{sessions}" if engine else f"{mode}-{sessions}"
    log_path = args.server_logs / f"{name}.log" if args.server_logs else None
    with (
        open(log_path, "w+b") if log_path else tempfile.TemporaryFile() as log,
        fresh_database("sqlite", "") as database_url,
    ):
        env = {key: value for key, value in os.environ.items() if key != "EARSHOT_CONFIG"}
        env.update(
            EARSHOT_DATABASE_URL=database_url,
            EARSHOT_HOST="127.0.0.1",
            EARSHOT_ENGINE_WORKERS=workers,
            EARSHOT_LOG_LEVEL="warning",
        )
        if config is not None:
            env["EARSHOT_CONFIG"] = str(config)
        try:
            with earshot_server(env, log) as (base_url, process):
                server = psutil.Process(process.pid)
                wait_ready(base_url, server)
                asyncio.run(warm_up(base_url, loop, setup))
                time.sleep(IDLE_SETTLE_S)
                step.idle_rss = _rss(server) + sum(_rss(w) for w in server.children(recursive=True))
                measure(step, base_url, server, loop, args, grace_s, setup)
        except BenchFailed as e:
            lines, traceback = log_problems(log)
            problems = "\n".join([*lines, traceback])
            message = f"{step.label} x{sessions}: {e}\n--- server log problems ---\n{problems}"
            raise BenchFailed(message) from e
        step.server_log, step.server_traceback = log_problems(log)
    return step


def measure(
    step: Step,
    base_url: str,
    server: psutil.Process,
    loop: SpeechLoop,
    args: argparse.Namespace,
    grace_s: float,
    setup: tuple[bytes, ...],
) -> None:
    """Ramp the sessions up, sample the server over the window, then collect and analyse the clients' logs."""
    with client_processes(base_url, loop, step.sessions, args.client_processes, setup) as clients:
        for _, conn in clients:
            receive(conn, "ready", CLIENT_JOIN_TIMEOUT_S)
        client_procs = [psutil.Process(process.pid) for process, _ in clients]
        t_base = time.monotonic() + 0.2
        step.t_base = t_base
        for _, conn in clients:
            conn.send(("go", t_base))
        connected = [receive(conn, "connected", RAMP_TIMEOUT_S) for _, conn in clients]
        for _, _, failures in connected:
            for failure in failures:
                step.errors[f"connect: {failure.split(':')[0]}"] += 1
        step.ramp_s = max(at for _, at, _ in connected) - t_base
        window_start = max(at for _, at, _ in connected) + args.warmup_s
        window_end = window_start + step.window_s
        for _, conn in clients:
            conn.send(("stop", window_end + grace_s))
        time.sleep(max(0.0, window_start - time.monotonic()))
        step.before = sample(server, client_procs)
        time.sleep(max(0.0, window_end - time.monotonic()))
        step.after = sample(server, client_procs)
        step.load_1m = os.getloadavg()[0]
        print(
            f"    window done; collecting (gateway {step.cores('gateway_cpu_s'):.2f} cores)",
            file=sys.stderr,
            flush=True,
        )
        logs: list[SessionLog] = []
        for _, conn in clients:
            _, client_logs, errors = receive(conn, "result", grace_s + CLIENT_JOIN_TIMEOUT_S)
            logs.extend(client_logs)
            step.errors.update(errors)
    analyse(step, logs, loop, (window_start, window_end))
