"""What the benches share: `earshot serve` on free ports, its engine workers, and throwaway databases."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import psutil

REPO = Path(__file__).resolve().parents[1]
STOP_TIMEOUT_S = 20


def step_search(held_at: Callable[[int], bool], steps: Sequence[int], refine: int) -> int:
    """The largest load held: `steps` upward until one is not held, then up to `refine` bisections between
    the last held and the first not (stopping within 5 %); each step is tried by `held_at(n)`."""
    held, failed = 0, 0
    for sessions in steps:
        if not held_at(sessions):
            failed = sessions
            break
        held = sessions
    for _ in range(refine if failed else 0):
        middle = (held + failed) // 2
        if failed - held <= max(1, held // 20) or middle in (held, failed):
            break
        if held_at(middle):
            held = middle
        else:
            failed = middle
    return held


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def server_process(
    command_for_port: Callable[[int], list[str]], log: IO[bytes], env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The command a free port gives, run from the repo in its own session; its base URL. Stopped on exit.

    Its own session means a Ctrl-C reaches only the bench, which then stops the server in order.
    """
    port = free_port()
    process = subprocess.Popen(
        command_for_port(port),
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        with ignoring_interrupts():
            stop(process)


def earshot_server(
    env: dict[str, str], log: IO[bytes]
) -> contextlib.AbstractContextManager[tuple[str, subprocess.Popen[bytes]]]:
    """`earshot serve` on a free port with this environment, in its own session; stopped on exit."""
    return server_process(
        lambda port: [sys.executable, "-m", "earshot", "serve", "--port", str(port)], log, env
    )


def engine_workers(parent: psutil.Process) -> list[psutil.Process]:
    """The engine worker processes under `parent`: spawned children, not the resource tracker."""
    workers = []
    for child in parent.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if any("spawn_main" in part for part in child.cmdline()):
                workers.append(child)
    return workers


def worker_rss(parent: psutil.Process) -> tuple[int, ...]:
    """Resident set size in bytes of each engine worker under `parent`, in pid order."""
    sizes = []
    for worker in sorted(engine_workers(parent), key=lambda process: process.pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            sizes.append(worker.memory_info().rss)
    return tuple(sizes)


def fmt_rss_mb(sizes: tuple[int, ...]) -> str:
    """Sizes in bytes as whole MiB joined by '/', or '-' for none."""
    return "/".join(f"{size / 2**20:.0f}" for size in sizes) or "-"


@contextlib.contextmanager
def ignoring_interrupts() -> Iterator[None]:
    """Let cleanup finish even if Ctrl-C is pressed again; the first interrupt is already on its way."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a server (it drains its usage writes), killing it and its workers if it hangs."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def postgres_urls(admin_url: str) -> tuple[str, str]:
    """(libpq URL of the admin database, server part to build sibling database URLs)."""
    url = admin_url.replace("postgresql+asyncpg://", "postgresql://")
    return url, url.rsplit("/", 1)[0]


@contextlib.contextmanager
def fresh_database(backend: str, postgres_admin_url: str) -> Iterator[str]:
    """The earshot URL of a new, empty database on `backend` (sqlite or postgresql), removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="earshot-bench-") as directory:
            yield f"sqlite+aiosqlite:///{Path(directory) / 'earshot.db'}"
        return
    import asyncpg

    libpq_url, base = postgres_urls(postgres_admin_url)
    name = f"earshot_bench_{uuid.uuid4().hex[:12]}"

    async def execute(statement: str) -> None:
        conn = await asyncpg.connect(libpq_url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    finally:
        with ignoring_interrupts():
            asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def positive_counts(text: str) -> tuple[int, ...]:
    """argparse type: a comma-separated list of positive counts (clients, sessions)."""
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from e
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("counts must be positive")
    return counts
