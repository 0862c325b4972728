"""One-shot transcription benchmark: real-time factor of the raw engine and of the HTTP API, 1 to 8 clients.

Run as `.venv/bin/python bench/oneshot.py [--workers N] [--repeat K] [--quick]`. It prints a table and never
asserts: RTF is wall seconds of processing per second of audio, lower is faster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import psutil
from serving import earshot_server

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import Audio
from earshot.engines.base import TranscribeOptions, transcribe
from earshot.engines.workers import WorkerPool
from earshot.routing.catalog import Catalog
from earshot.routing.router import Router

REPO = Path(__file__).resolve().parents[1]
AUDIO_DIR = REPO.parent / "shared" / "audio"
CLIENT_COUNTS = (1, 2, 8)
QUICK_CLIPS = 10
READY_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 300.0
TARGET_HTTP_RAW_RATIO = 1.05
SERVER_LOG_TAIL_CHARS = 4000
BACKGROUND_SAMPLE_S = 2.0
COLUMNS = (
    "mode",
    "clients",
    "clips",
    "audio s",
    "wall s",
    "RTF",
    "audio s/s",
    "tree cores",
    "machine cores",
    "decode s",
)


@dataclass(frozen=True, slots=True)
class Clip:
    """One English speech file: its bytes as uploaded and its audio as decoded in-process."""

    path: Path
    data: bytes
    audio: Audio
    decode_s: float


@dataclass(frozen=True, slots=True)
class Result:
    """One measured run of a list of clips through one path with some number of concurrent clients."""

    mode: str
    clients: int
    clips: int
    audio_s: float
    wall_s: float
    tree_cpu_s: float
    machine_cores: float
    decode_s: float | None

    @property
    def rtf(self) -> float:
        """Wall seconds per second of audio."""
        return self.wall_s / self.audio_s

    @property
    def throughput(self) -> float:
        """Seconds of audio transcribed per wall second."""
        return self.audio_s / self.wall_s

    @property
    def tree_cores(self) -> float:
        """CPU seconds of the measured process tree per wall second."""
        return self.tree_cpu_s / self.wall_s


ClientRun = Callable[[list[Clip]], Awaitable[list[str]]]
RunResults = tuple[list[Result], list[str]]


class ServerFailed(RuntimeError):
    """The earshot server did not start or answered a request with an error."""


def load_clips(limit: int | None) -> list[Clip]:
    """The clips of INDEX.tsv that have a transcript, decoded once each."""
    index = AUDIO_DIR / "INDEX.tsv"
    if not index.is_file():
        sys.exit(f"oneshot: no test audio at {AUDIO_DIR} (expected {index}); nothing to benchmark")
    with index.open(newline="") as f:
        rows = [row for row in csv.DictReader(f, delimiter="\t") if (row.get("transcript") or "").strip()]
    if limit is not None and len(rows) > limit:
        rows = rows[:: len(rows) // limit][:limit]
    clips = []
    for row in rows:
        path = AUDIO_DIR / row["relpath"]
        data = path.read_bytes()
        started = time.perf_counter()
        audio = decode_audio(data)
        clips.append(Clip(path, data, audio, time.perf_counter() - started))
    return clips


def shares(jobs: Sequence[Clip], clients: int) -> list[list[Clip]]:
    """Split the jobs into one interleaved share per client, so long and short clips spread evenly."""
    return [list(jobs[i::clients]) for i in range(clients)]


def tree_cpu_s(root: psutil.Process) -> dict[int, float]:
    """User+system CPU seconds of `root` and each of its live descendants, by pid."""
    times: dict[int, float] = {}
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            cpu = proc.cpu_times()
            times[proc.pid] = cpu.user + cpu.system
    return times


async def measure(
    mode: str, clients: int, jobs: Sequence[Clip], run_client: ClientRun, root: psutil.Process
) -> tuple[Result, list[str]]:
    """Run every job across `clients` concurrent clients; time it and count the CPU it used."""
    before = tree_cpu_s(root)
    psutil.cpu_percent(interval=None)
    started = time.perf_counter()
    texts = await asyncio.gather(*(run_client(share) for share in shares(jobs, clients)))
    wall_s = time.perf_counter() - started
    machine_percent = psutil.cpu_percent(interval=None)
    after = tree_cpu_s(root)
    cpu_s = sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
    result = Result(
        mode=mode,
        clients=clients,
        clips=len(jobs),
        audio_s=sum(clip.audio.duration_s for clip in jobs),
        wall_s=wall_s,
        tree_cpu_s=cpu_s,
        machine_cores=machine_percent / 100 * (psutil.cpu_count() or 1),
        decode_s=sum(clip.decode_s for clip in jobs) if mode == "raw" else None,
    )
    return result, [text for share in texts for text in share]


async def bench_raw(jobs: list[Clip], workers: int) -> RunResults:
    """The engine path the server uses, in-process on decoded audio, for each client count."""
    pool = WorkerPool(workers)
    router = Router(Catalog.embedded(), pool)
    try:
        await router.start()
        engine = router.route(None).engine
        await transcribe(engine, jobs[0].audio, TranscribeOptions())

        async def run_client(share: list[Clip]) -> list[str]:
            return [(await transcribe(engine, clip.audio, TranscribeOptions())).text for clip in share]

        return await run_all("raw", jobs, run_client, psutil.Process())
    finally:
        await router.stop()
        await asyncio.to_thread(pool.shutdown)


async def bench_http(jobs: list[Clip], base_url: str, server: psutil.Process) -> RunResults:
    """POST /v1/audio/transcriptions on a running server, for each client count."""
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
        await wait_ready(client, server)
        await post_clip(client, jobs[0])

    async def run_client(share: list[Clip]) -> list[str]:
        async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
            return [await post_clip(client, clip) for clip in share]

    return await run_all("http", jobs, run_client, server)


async def run_all(mode: str, jobs: list[Clip], run_client: ClientRun, root: psutil.Process) -> RunResults:
    """Measure each client count in turn; also return the sequential run's texts in job order."""
    results: list[Result] = []
    sequential_texts: list[str] = []
    for clients in CLIENT_COUNTS:
        result, texts = await measure(mode, clients, jobs, run_client, root)
        results.append(result)
        if clients == 1:
            sequential_texts = texts
        print(f"  {mode} x{clients}: RTF {result.rtf:.4f}", file=sys.stderr, flush=True)
    return results, sequential_texts


async def wait_ready(client: httpx.AsyncClient, server: psutil.Process) -> None:
    """Poll GET /readyz until it answers 200, failing if the server exits or takes too long."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not server.is_running() or server.status() == psutil.STATUS_ZOMBIE:
            raise ServerFailed("the server exited before it was ready")
        with contextlib.suppress(httpx.TransportError):
            if (await client.get("/readyz")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise ServerFailed(f"GET /readyz did not answer 200 within {READY_TIMEOUT_S:g} s")


async def post_clip(client: httpx.AsyncClient, clip: Clip) -> str:
    """Upload one clip the way an OpenAI SDK does and return the transcript text."""
    try:
        response = await client.post(
            "/v1/audio/transcriptions",
            files={"file": (clip.path.name, clip.data, "application/octet-stream")},
            data={"model": "whisper-1", "response_format": "json"},
        )
    except httpx.TransportError as e:
        raise ServerFailed(f"POST {clip.path.name}: {type(e).__name__}: {e}") from e
    if response.status_code != 200:
        raise ServerFailed(f"POST {clip.path.name}: HTTP {response.status_code}: {response.text}")
    text: str = response.json()["text"]
    return text


@contextlib.contextmanager
def running_server(workers: int, log: IO[bytes]) -> Iterator[tuple[str, psutil.Process]]:
    """`earshot serve` with the embedded catalog and a throwaway database; stopped on exit."""
    env = {key: value for key, value in os.environ.items() if key != "EARSHOT_CONFIG"}
    env["EARSHOT_ENGINE_WORKERS"] = str(workers)
    with tempfile.TemporaryDirectory() as data_dir:
        env["EARSHOT_DATABASE_URL"] = f"sqlite+aiosqlite:///{data_dir}/earshot.db"
        with earshot_server(env, log) as (base_url, process):
            yield base_url, psutil.Process(process.pid)


def run_http(jobs: list[Clip], workers: int) -> RunResults:
    """Benchmark through a real server; on failure, show the server's log and exit."""
    with tempfile.TemporaryFile() as log:
        try:
            with running_server(workers, log) as (base_url, server):
                return asyncio.run(bench_http(jobs, base_url, server))
        except ServerFailed as e:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-SERVER_LOG_TAIL_CHARS:]
            sys.exit(f"oneshot: {e}\n--- server log (tail) ---\n{tail}")


def print_table(results: list[Result]) -> None:
    """The results as an aligned text table."""
    rows = [COLUMNS]
    for r in results:
        decode = f"{r.decode_s:.2f} (excl.)" if r.decode_s is not None else "in wall"
        rows.append(
            (
                r.mode,
                str(r.clients),
                str(r.clips),
                f"{r.audio_s:.1f}",
                f"{r.wall_s:.2f}",
                f"{r.rtf:.4f}",
                f"{r.throughput:.1f}",
                f"{r.tree_cores:.2f}",
                f"{r.machine_cores:.2f}",
                decode,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


def print_summary(raw: Result, http: Result, raw_texts: list[str], http_texts: list[str]) -> None:
    """The sequential HTTP-to-raw comparison the gateway's overhead target is about."""
    same = sum(a == b for a, b in zip(raw_texts, http_texts, strict=True))
    raw_with_decode_rtf = (raw.wall_s + (raw.decode_s or 0.0)) / raw.audio_s
    print()
    print(f"HTTP text identical to raw on {same}/{len(raw_texts)} clips (sequential run)")
    print(
        f"raw+decode sequential RTF = {raw_with_decode_rtf:.4f}; "
        f"HTTP/(raw+decode) ratio = {http.rtf / raw_with_decode_rtf:.3f}"
    )
    print(f"HTTP/raw sequential RTF ratio = {http.rtf / raw.rtf:.3f} (target ≤ {TARGET_HTTP_RAW_RATIO})")


def main() -> None:
    """Parse arguments, run both benchmarks and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--workers", type=int, default=cores, help="engine worker processes (default: cores)")
    parser.add_argument("--repeat", type=int, default=1, help="times to run the whole clip list per row")
    parser.add_argument("--quick", action="store_true", help=f"use only {QUICK_CLIPS} clips (smoke run)")
    args = parser.parse_args()

    idle_cores = psutil.cpu_percent(interval=BACKGROUND_SAMPLE_S) / 100 * (psutil.cpu_count() or 1)
    clips = load_clips(QUICK_CLIPS if args.quick else None)
    jobs = clips * max(1, args.repeat)
    audio_s = sum(clip.audio.duration_s for clip in clips)
    print(
        f"{len(clips)} clips, {audio_s:.1f} s of audio, x{args.repeat}; {args.workers} engine workers, "
        f"{psutil.cpu_count()} CPUs, {idle_cores:.2f} busy with other work before the run",
        file=sys.stderr,
        flush=True,
    )
    raw_results, raw_texts = asyncio.run(bench_raw(jobs, args.workers))
    http_results, http_texts = run_http(jobs, args.workers)
    print(
        f"\nCPU busy before the run (other processes): {idle_cores:.2f} cores; tree = measured processes only"
    )
    print_table(raw_results + http_results)
    print_summary(raw_results[0], http_results[0], raw_texts, http_texts)


if __name__ == "__main__":
    main()
