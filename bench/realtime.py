"""Realtime benchmark: how many concurrent /v1/realtime sessions one server holds at real-time pace.

Run as `.venv/bin/python bench/realtime.py [--mode null|engine|both] [--model ID] [--steps 100,200,...]
[--engine-steps 4,8,...] [--window-s S] [--engine-window-s S] [--chunk-ms MS] [--quick] [--server-logs DIR]`.
Every session streams the same loop of real English speech (clips from ../shared/audio with 1 s pauses between
them, 24 kHz PCM16 mono) at real-time pace, one `input_audio_buffer.append` per chunk, with the server VAD at
its defaults; sessions are spread over the chunk period (sends) and over the loop (turns). Each step of N
sessions runs on a fresh server and database; the sessions come from a separate client process (websockets,
uvloop), so its CPU is kept apart from the server's and reported. Steps go upward until one is not held, then
bisect (--refine).

  null    a catalog whose only model is the do-nothing engine: what is measured is the gateway itself
          (WebSocket, JSON, base64, resampling, Silero VAD, turns, metering). A step is held when the p99
          event lag is at most 50 ms. RSS per session = (server RSS with N sessions - idle) / N.
  engine  the default catalog, every session asking for --model (default whisper-tiny.en, the server's
          default; or pocketsphinx) with a `session.update` (audio.input.transcription.model) before its
          first audio. A step is held when every turn completes, the p99 completed latency is at most 1 s
          (--max-completed-s) and does not grow through the window. The ceiling it is compared with is
          cores / raw RTF, the raw RTF being that model's one-shot CPU seconds per audio second on the same
          audio, in-process with one worker (= its wall RTF for a one-threaded engine like pocketsphinx;
          faster-whisper uses every core in one decode, so its wall RTF is shown beside it).

Event lag. The server can decide that speech started only once it holds the 32 ms VAD window after the onset
(`audio_start_ms + prefix_padding_ms`), and that speech stopped (and, with the null engine, completed) only
once it holds `silence_duration_ms`, rounded up to whole windows, after `audio_end_ms`. The lag of an event is
its arrival minus the moment the client sent the chunk that gave the server that much audio, counted through
the server's own resampler (soxr holds back a few ms, so a decision can need the next chunk); clamped at 0.
With an engine: first-delta latency = the first delta's arrival minus the send time of the chunk holding
the onset; completed latency = `completed`'s arrival minus the send time of the speech_stopped decision.
A turn that never completes counts as an infinite lag. It prints markdown tables; it never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import psutil
from realtime_load import BenchFailed, SpeechLoop, load_loop
from realtime_results import (
    ENGINE_HEADER,
    MAX_EVENT_LAG_MS,
    NULL_HEADER,
    Step,
    engine_row,
    fmt_errors,
    fmt_ms,
    largest_held,
    null_row,
    percentile,
    print_server_logs,
    print_table,
)
from realtime_step import run_step
from serving import engine_workers, positive_counts, step_search

from earshot.routing.catalog import DEFAULT_MODEL_ID, Catalog

NULL_CATALOG = 'models:\n  "null":\n    engine: "null"\n'
NULL_STEPS = (100, 200, 300, 400, 500, 600, 800, 1000, 1250, 1500, 2000)
QUICK_NULL_STEPS = (10, 40)
QUICK_ENGINE_STEPS = (1, 2)
# engine steps, as fractions of the ceiling cores / RTF, when none are given.
ENGINE_FRACTIONS = (0.5, 0.7, 0.85, 1.0, 1.15, 1.3)
MIN_WINDOW_S = 5.0
RTF_RUNS = 3
CORES = len(os.sched_getaffinity(0))


def raw_rtf(loop: SpeechLoop, model: str) -> tuple[float, float]:
    """The model's one-shot (wall, CPU) RTF on the loop, in-process with one worker (medians of a few runs).

    CPU RTF is the worker's CPU seconds per second of audio: what a session's audio costs in cores.
    """
    from earshot.engines.base import TranscribeOptions, transcribe
    from earshot.engines.workers import WorkerPool
    from earshot.routing.router import Router

    def worker_cpu_s() -> float:
        times = [worker.cpu_times() for worker in engine_workers(psutil.Process())]
        return sum(t.user + t.system for t in times)

    async def run() -> tuple[list[float], list[float]]:
        pool = WorkerPool(1)
        router = Router(Catalog.embedded(), pool)
        try:
            await router.start(model)
            engine = router.route(model).engine
            await transcribe(engine, loop.audio, TranscribeOptions())
            walls, cpus = [], []
            for _ in range(RTF_RUNS):
                cpu_before, started = worker_cpu_s(), time.perf_counter()
                await transcribe(engine, loop.audio, TranscribeOptions())
                walls.append((time.perf_counter() - started) / loop.audio.duration_s)
                cpus.append((worker_cpu_s() - cpu_before) / loop.audio.duration_s)
            return walls, cpus
        finally:
            await router.stop()
            await asyncio.to_thread(pool.shutdown)

    walls, cpus = asyncio.run(run())
    return statistics.median(walls), statistics.median(cpus)


def run_mode(
    mode: str, steps: Sequence[int], loop: SpeechLoop, args: argparse.Namespace, config: Path | None
) -> list[Step]:
    """Steps upward until one is not held, then a few bisecting steps between the last held and it."""
    results: list[Step] = []
    label = mode if mode == "null" else f"{mode} {args.model}"

    def run(sessions: int) -> bool:
        print(f"  {label} x{sessions}: starting a server", file=sys.stderr, flush=True)
        step = run_step(mode, sessions, loop, args, config)
        results.append(step)
        print(
            f"  {label} x{sessions}: {'held' if step.held else 'NOT held'}; p99 event lag "
            f"{fmt_ms(percentile(step.events_ms, 0.99))} ms, "
            f"p99 completed {fmt_ms(percentile(step.completed_ms, 0.99))} ms, "
            f"errors {fmt_errors(step)}",
            file=sys.stderr,
            flush=True,
        )
        for line in step.server_log:
            print(f"    server log: {line}", file=sys.stderr, flush=True)
        if step.server_traceback:
            print(f"    server log, first traceback:\n{step.server_traceback}", file=sys.stderr, flush=True)
        return step.held

    step_search(run, steps, args.refine)
    return sorted(results, key=lambda step: step.sessions)


def engine_steps(ceiling: float) -> tuple[int, ...]:
    return tuple(sorted({max(1, round(ceiling * fraction)) for fraction in ENGINE_FRACTIONS}))


def raise_open_files() -> int:
    """Raise the open-file limit to its hard limit; the server and clients inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("null", "engine", "both"), default="both")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL_ID,
        metavar="ID",
        help=f"engine: the default catalog's model the sessions ask for (default {DEFAULT_MODEL_ID})",
    )
    parser.add_argument(
        "--steps",
        type=positive_counts,
        help=f"session counts for null (default {','.join(map(str, NULL_STEPS))})",
    )
    parser.add_argument(
        "--engine-steps",
        type=positive_counts,
        help=f"session counts for engine (default: fractions of the ceiling {CORES} / raw RTF)",
    )
    parser.add_argument("--window-s", type=float, default=15.0, help="measurement window per null step")
    parser.add_argument(
        "--engine-window-s",
        type=float,
        default=20.0,
        help="measurement window per engine step (longer: each session ends a turn only every ~4 s)",
    )
    parser.add_argument("--warmup-s", type=float, default=4.0, help="streaming before the window opens")
    parser.add_argument("--chunk-ms", type=int, default=100, help="audio per append message")
    parser.add_argument("--max-completed-s", type=float, default=1.0, help="engine: p99 completed limit")
    parser.add_argument("--engine-workers", type=int, default=CORES, help="engine: server's engine workers")
    parser.add_argument("--client-processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--refine", type=int, default=2, help="bisecting steps after the first failure")
    parser.add_argument("--server-logs", type=Path, help="keep each step's server log in this folder")
    parser.add_argument("--quick", action="store_true", help="tiny steps and a short window (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.window_s = min(args.window_s, 5.0)
        args.engine_window_s = min(args.engine_window_s, 5.0)
        args.warmup_s = min(args.warmup_s, 2.0)
    known = Catalog.embedded().models
    if args.mode != "null" and args.model not in known:
        parser.error(f"unknown model {args.model!r}; the default catalog has {', '.join(known)}")
    if (
        min(args.window_s, args.engine_window_s) < MIN_WINDOW_S
        or args.chunk_ms < 10
        or args.client_processes < 1
    ):
        parser.error(
            f"the windows must be at least {MIN_WINDOW_S:g} s (every session's turns must show in it), "
            "--chunk-ms at least 10, --client-processes at least 1"
        )
    if args.server_logs:
        args.server_logs.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    open_files = raise_open_files()
    loop = load_loop(args.chunk_ms)
    busy = psutil.cpu_percent(interval=1.0) / 100 * (psutil.cpu_count() or 1)
    load = os.getloadavg()
    print(
        f"loop: {len(loop.clip_names)} clips, {loop.duration_s:.1f} s, {len(loop.messages)} chunks of "
        f"{args.chunk_ms} ms ({len(loop.messages[0])} bytes each); {psutil.cpu_count()} CPUs, "
        f"{busy:.2f} busy before, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"open files {open_files}",
        file=sys.stderr,
        flush=True,
    )
    null_steps: list[Step] = []
    model_steps: list[Step] = []
    rtf = cpu_rtf = math.nan
    started = time.monotonic()
    try:
        if args.mode in ("null", "both"):
            with tempfile.TemporaryDirectory(prefix="earshot-bench-") as directory:
                config = Path(directory) / "null.yaml"
                config.write_text(NULL_CATALOG)
                steps = args.steps or (QUICK_NULL_STEPS if args.quick else NULL_STEPS)
                null_steps = run_mode("null", steps, loop, args, config)
        if args.mode in ("engine", "both"):
            print(f"  engine {args.model}: raw one-shot RTF on the loop", file=sys.stderr, flush=True)
            rtf, cpu_rtf = raw_rtf(loop, args.model)
            ceiling = CORES / cpu_rtf
            steps = args.engine_steps or (args.steps if args.mode == "engine" else None)
            steps = steps or (QUICK_ENGINE_STEPS if args.quick else engine_steps(ceiling))
            print(
                f"  engine {args.model}: RTF {rtf:.3f} wall, {cpu_rtf:.3f} CPU; ceiling {ceiling:.1f}; "
                f"steps {steps}",
                file=sys.stderr,
            )
            model_steps = run_mode("engine", steps, loop, args, None)
    except BenchFailed as e:
        sys.exit(f"realtime: {e}")
    except KeyboardInterrupt:
        sys.exit("\nrealtime: interrupted; servers and clients stopped")
    load = os.getloadavg()
    print(
        f"\nLoop of {loop.duration_s:.1f} s ({', '.join(loop.clip_names)}), {args.chunk_ms} ms chunks; "
        f"windows {args.window_s:g} s (null) and {args.engine_window_s:g} s (engine {args.model}) after "
        f"{args.warmup_s:g} s of warm-up; {psutil.cpu_count()} CPUs, "
        f"{busy:.2f} busy before the run; load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"run took {time.monotonic() - started:.0f} s"
    )
    if null_steps:
        print("\nnull engine (the gateway itself): event lag = speech_started, speech_stopped, completed\n")
        print_table(NULL_HEADER, [null_row(step) for step in null_steps])
        best = largest_held(null_steps)
        per_session = next((s.rss_per_session for s in null_steps if s.sessions == best), math.nan)
        print(
            f"\nnull: largest N held with p99 event lag ≤ {MAX_EVENT_LAG_MS:g} ms: {best or 'none'}"
            f" (target ≥ 1000); RSS per session there {per_session / 1024:.0f} KB (target ≤ 1024 KB)"
        )
    if model_steps:
        print(
            f"\nengine {args.model} ({args.engine_workers} workers): completed latency after the VAD "
            "endpoint, first delta after speech onset\n"
        )
        print_table(ENGINE_HEADER, [engine_row(step) for step in model_steps])
        print(
            f"\nengine {args.model}: largest N held in real time "
            f"(p99 completed ≤ {args.max_completed_s:g} s): {largest_held(model_steps) or 'none'}; "
            f"raw one-shot RTF {rtf:.3f} wall, {cpu_rtf:.3f} CPU on this audio, "
            f"ceiling {CORES} / RTF = {CORES / cpu_rtf:.1f} sessions"
        )
    print_server_logs([*null_steps, *model_steps])


if __name__ == "__main__":
    main()
