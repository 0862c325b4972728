"""One-shot transcription benchmark per model: WER, and the real-time factor of the raw engine and of HTTP.

Run as `.venv/bin/python bench/oneshot.py [--model ID ...] [--clients 1,2] [--workers N] [--repeat K]
[--quick]`. Each model (default: both models of the embedded catalog, whisper-tiny.en and pocketsphinx)
transcribes the English clips of ../shared/audio (tests/conftest.py's ENGLISH_CLIPS) in-process through the
engine the server uses ("raw", on audio decoded beforehand) and through a fresh `earshot serve` with the
embedded catalog ("http": POST /v1/audio/transcriptions with `model=ID`, decoding included), with 1 and 2
concurrent clients. It reports the WER of the sequential runs (tests/e2e/wer.py's normalisation), the RSS of
each engine worker after the run, and "HTTP vs raw" (how much higher the sequential RTF is through HTTP; the
target is at most +5 %). It prints tables and never asserts: RTF is wall seconds of processing per second of
audio, lower is faster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import httpx
import psutil
from serving import REPO, earshot_server, fmt_rss_mb, positive_counts, worker_rss

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import Audio
from earshot.engines.base import TranscribeOptions, transcribe
from earshot.engines.workers import WorkerPool
from earshot.routing.catalog import DEFAULT_MODEL_ID, Catalog
from earshot.routing.router import Router

sys.path.insert(0, str(REPO))

from tests.conftest import ENGLISH_CLIPS
from tests.e2e.wer import word_errors, words

AUDIO_DIR = REPO.parent / "shared" / "audio"
DEFAULT_MODELS = (DEFAULT_MODEL_ID, "pocketsphinx")
CLIENT_COUNTS = (1, 2)
QUICK_CLIPS = 10
READY_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 300.0
TARGET_HTTP_RAW_RATIO = 1.05
SERVER_LOG_TAIL_CHARS = 4000
BACKGROUND_SAMPLE_S = 2.0
COLUMNS = (
    "model",
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
    """One English speech file: its bytes as uploaded, its audio as decoded in-process, and what it says."""

    path: Path
    data: bytes
    audio: Audio
    decode_s: float
    transcript: str


@dataclass(frozen=True, slots=True)
class Result:
    """One measured run of a list of clips through one path with some number of concurrent clients."""

    model: str
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


@dataclass(frozen=True, slots=True)
class PathRun:
    """One model through one path: a result per client count, the sequential run's texts, the workers' RSS."""

    model: str
    mode: str
    results: list[Result]
    texts: list[str]
    worker_rss: tuple[int, ...]
    gateway_rss: int | None = None

    def result(self, clients: int) -> Result | None:
        """The run with this many clients, if it was measured."""
        return next((r for r in self.results if r.clients == clients), None)


ClientRun = Callable[[list[Clip]], Awaitable[list[str]]]
RunResults = tuple[list[Result], list[str]]


class ServerFailed(RuntimeError):
    """The earshot server did not start or answered a request with an error."""


def load_clips(limit: int | None) -> list[Clip]:
    """The English clips the tests use (exact single-speaker transcripts), decoded once each."""
    index = AUDIO_DIR / "INDEX.tsv"
    if not index.is_file() or not ENGLISH_CLIPS:
        sys.exit(f"oneshot: no English test audio at {AUDIO_DIR} (expected {index}); nothing to benchmark")
    rows = list(ENGLISH_CLIPS)
    if limit is not None and len(rows) > limit:
        rows = rows[:: len(rows) // limit][:limit]
    clips = []
    for row in rows:
        data = row.path.read_bytes()
        started = time.perf_counter()
        audio = decode_audio(data)
        clips.append(Clip(row.path, data, audio, time.perf_counter() - started, row.transcript))
    return clips


def word_error_rate(jobs: Sequence[Clip], texts: Sequence[str]) -> float:
    """WER in percent of `texts` against the jobs' transcripts, over all their words."""
    references = [words(clip.transcript) for clip in jobs]
    errors = sum(word_errors(ref, words(text)) for ref, text in zip(references, texts, strict=True))
    return errors / max(1, sum(len(ref) for ref in references)) * 100


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
    model: str, mode: str, clients: int, jobs: Sequence[Clip], run_client: ClientRun, root: psutil.Process
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
        model=model,
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


async def bench_raw(model: str, jobs: list[Clip], workers: int, client_counts: Sequence[int]) -> PathRun:
    """The model's engine as the server runs it, in-process on decoded audio, for each client count."""
    pool = WorkerPool(workers)
    router = Router(Catalog.embedded(), pool)
    try:
        await router.start(model)
        engine = router.route(model).engine
        await warm_up_workers(workers, lambda: transcribe(engine, jobs[0].audio, TranscribeOptions()))

        async def run_client(share: list[Clip]) -> list[str]:
            return [(await transcribe(engine, clip.audio, TranscribeOptions())).text for clip in share]

        me = psutil.Process()
        results, texts = await run_all(model, "raw", jobs, run_client, me, client_counts)
        return PathRun(model, "raw", results, texts, worker_rss(me))
    finally:
        await router.stop()
        await asyncio.to_thread(pool.shutdown)


async def warm_up_workers(workers: int, once: Callable[[], Awaitable[object]]) -> None:
    """One request per worker at once, so every worker has loaded the model and run it before timing."""
    await asyncio.gather(*(once() for _ in range(workers)))


async def bench_http(
    model: str,
    jobs: list[Clip],
    base_url: str,
    server: psutil.Process,
    workers: int,
    client_counts: Sequence[int],
) -> PathRun:
    """POST /v1/audio/transcriptions with `model` on a running server, for each client count."""
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
        await wait_ready(client, server)
        await warm_up_workers(workers, lambda: post_clip(client, jobs[0], model))

    async def run_client(share: list[Clip]) -> list[str]:
        async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
            return [await post_clip(client, clip, model) for clip in share]

    results, texts = await run_all(model, "http", jobs, run_client, server, client_counts)
    return PathRun(model, "http", results, texts, worker_rss(server), server.memory_info().rss)


async def run_all(
    model: str,
    mode: str,
    jobs: list[Clip],
    run_client: ClientRun,
    root: psutil.Process,
    client_counts: Sequence[int],
) -> RunResults:
    """Measure each client count in turn; also return the sequential (or first) run's texts in job order."""
    results: list[Result] = []
    sequential_texts: list[str] = []
    for clients in client_counts:
        result, texts = await measure(model, mode, clients, jobs, run_client, root)
        results.append(result)
        if clients == 1 or not sequential_texts:
            sequential_texts = texts
        print(f"  {model} {mode} x{clients}: RTF {result.rtf:.4f}", file=sys.stderr, flush=True)
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


async def post_clip(client: httpx.AsyncClient, clip: Clip, model: str) -> str:
    """Upload one clip the way an OpenAI SDK does, asking for `model`, and return the transcript text."""
    try:
        response = await client.post(
            "/v1/audio/transcriptions",
            files={"file": (clip.path.name, clip.data, "application/octet-stream")},
            data={"model": model, "response_format": "json"},
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


def run_http(model: str, jobs: list[Clip], workers: int, client_counts: Sequence[int]) -> PathRun:
    """Benchmark one model through a fresh server; on failure, show the server's log and exit."""
    with tempfile.TemporaryFile() as log:
        try:
            with running_server(workers, log) as (base_url, server):
                return asyncio.run(bench_http(model, jobs, base_url, server, workers, client_counts))
        except ServerFailed as e:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-SERVER_LOG_TAIL_CHARS:]
            sys.exit(f"oneshot: {e}\n--- server log (tail) ---\n{tail}")


def print_table(results: list[Result]) -> None:
    """The results as an aligned text table."""
    rows: list[Sequence[str]] = [COLUMNS]
    for r in results:
        decode = f"{r.decode_s:.2f} (excl.)" if r.decode_s is not None else "in wall"
        rows.append(
            (
                r.model,
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
    print_rows(rows)


def print_rows(rows: Sequence[Sequence[str]]) -> None:
    """Rows of cells as an aligned text table, the first row being the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


def excess(http: Result | None, raw: Result | None) -> str:
    """How much slower HTTP is than raw, as a signed percentage of raw's RTF."""
    if http is None or raw is None:
        return "-"
    return f"{(http.rtf / raw.rtf - 1) * 100:+.1f} %"


SUMMARY_COLUMNS = (
    "model",
    "WER raw %",
    "WER http %",
    "same text",
    "HTTP vs raw x1",
    "HTTP vs raw x2",
    "HTTP vs raw+decode x1",
    "raw worker RSS MB",
    "server worker RSS MB",
    "gateway RSS MB",
)


def print_summary(jobs: list[Clip], runs: list[tuple[PathRun, PathRun]]) -> None:
    """Per model: WER, how much HTTP adds to the raw engine (the gateway's overhead target), and memory."""
    rows: list[Sequence[str]] = [SUMMARY_COLUMNS]
    lines = []
    for raw, http in runs:
        same = sum(a == b for a, b in zip(raw.texts, http.texts, strict=True))
        first_raw, first_http = raw.results[0], http.results[0]
        raw_with_decode = replace(first_raw, wall_s=first_raw.wall_s + (first_raw.decode_s or 0.0))
        rows.append(
            (
                raw.model,
                f"{word_error_rate(jobs, raw.texts):.1f}",
                f"{word_error_rate(jobs, http.texts):.1f}",
                f"{same}/{len(raw.texts)}",
                excess(http.result(1), raw.result(1)),
                excess(http.result(2), raw.result(2)),
                excess(http.result(1), raw_with_decode if first_raw.clients == 1 else None),
                fmt_rss_mb(raw.worker_rss),
                fmt_rss_mb(http.worker_rss),
                f"{(http.gateway_rss or 0) / 2**20:.0f}",
            )
        )
        overhead = excess(first_http, first_raw)
        lines.append(
            f"{raw.model}: HTTP vs raw: {overhead} (RTF {first_http.rtf:.4f} vs {first_raw.rtf:.4f}, "
            f"x{first_raw.clients}; target ≤ +{(TARGET_HTTP_RAW_RATIO - 1) * 100:.0f} %)"
        )
    print()
    print_rows(rows)
    print()
    print("\n".join(lines))
    print(
        "\nWER over the sequential run's texts (tests/e2e/wer.py normalisation); raw excludes decoding, "
        "HTTP includes it (raw+decode adds the in-process decode time); server workers hold every model."
    )


def parse_models(values: list[str] | None) -> list[str]:
    """Model ids from repeated and comma-separated --model values, in order, without repeats."""
    if not values:
        return list(DEFAULT_MODELS)
    models = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return list(dict.fromkeys(models))


def main() -> None:
    """Parse arguments, run each model raw and through HTTP, and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cores = len(os.sched_getaffinity(0))
    parser.add_argument(
        "--model",
        action="append",
        metavar="ID",
        help=f"embedded catalog model; repeatable or comma-separated (default: {','.join(DEFAULT_MODELS)})",
    )
    parser.add_argument(
        "--clients",
        type=positive_counts,
        default=CLIENT_COUNTS,
        help=f"concurrent client counts (default: {','.join(map(str, CLIENT_COUNTS))})",
    )
    parser.add_argument("--workers", type=int, default=cores, help="engine worker processes (default: cores)")
    parser.add_argument("--repeat", type=int, default=1, help="times to run the whole clip list per row")
    parser.add_argument("--quick", action="store_true", help=f"use only {QUICK_CLIPS} clips (smoke run)")
    args = parser.parse_args()
    models = parse_models(args.model)
    known = Catalog.embedded().models
    if unknown := [model for model in models if model not in known]:
        parser.error(f"unknown model {', '.join(unknown)}; the embedded catalog has {', '.join(known)}")

    idle_cores = psutil.cpu_percent(interval=BACKGROUND_SAMPLE_S) / 100 * (psutil.cpu_count() or 1)
    clips = load_clips(QUICK_CLIPS if args.quick else None)
    jobs = clips * max(1, args.repeat)
    audio_s = sum(clip.audio.duration_s for clip in clips)
    print(
        f"{len(clips)} clips, {audio_s:.1f} s of audio, x{args.repeat}; models {', '.join(models)}; "
        f"{args.workers} engine workers, {psutil.cpu_count()} CPUs, "
        f"{idle_cores:.2f} busy with other work before the run",
        file=sys.stderr,
        flush=True,
    )
    runs = []
    for model in models:
        raw = asyncio.run(bench_raw(model, jobs, args.workers, args.clients))
        http = run_http(model, jobs, args.workers, args.clients)
        runs.append((raw, http))
    print(
        f"\n{len(clips)} English clips, {audio_s:.1f} s of audio, x{args.repeat}; "
        f"{args.workers} engine workers; CPU busy before the run (other processes): {idle_cores:.2f} cores; "
        "tree = measured processes only\n"
    )
    print_table([result for raw, http in runs for result in (*raw.results, *http.results)])
    print_summary(jobs, runs)


if __name__ == "__main__":
    main()
