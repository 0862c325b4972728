"""Streamed transcripts against the one-shot route: how soon text shows, how often it grows, what it costs.

Run as `.venv/bin/python bench/transcripts.py [--minutes 10] [--concurrent 8] [--rounds 3] [--workers N]`.
It builds one recording of `--minutes` from the English clips of ../shared/audio (in order, 0.4 s of silence
between, looped until long enough), as a 16 kHz FLAC, and serves it to a fresh `earshot serve` with the
embedded catalog:

- one-shot: `POST /v1/audio/transcriptions` (json), wall time to the answer; one-shot and streamed runs take
  turns `--rounds` times and the medians are compared;
- streamed: `POST /v1/transcripts` with `Accept: text/event-stream` (`use_cache=false`): time to the first
  `transcription` snapshot (sent, empty, when the decode starts) and to the first with text, the gaps between
  snapshots, and the wall time to `done`; the target is at most 5 % slower than one-shot on the same file;
- the server's RSS (the app process, and its engine workers) sampled while 1 and then `--concurrent` streamed
  uploads of the same file run at once.

It prints tables and never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np
import psutil
from oneshot import ServerFailed, running_server, wait_ready
from serving import REPO, engine_workers

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import ENGINE_RATE_HZ

sys.path.insert(0, str(REPO))

from tests.conftest import ENGLISH_CLIPS
from tests.e2e.flac import flac_of

GAP_S = 0.4
TARGET_STREAM_ONESHOT_RATIO = 1.05
RSS_SAMPLE_S = 0.5
REQUEST_TIMEOUT_S = 1800.0
SERVER_LOG_TAIL_CHARS = 4000


def recording(minutes: float) -> tuple[bytes, float]:
    """A FLAC of the English clips back to back until `minutes` long, and its length in seconds."""
    if not ENGLISH_CLIPS:
        sys.exit("transcripts: ../shared/audio is absent (it sits beside the repo)")
    gap = np.zeros(round(GAP_S * ENGINE_RATE_HZ), dtype=np.int16)
    wanted = round(minutes * 60 * ENGINE_RATE_HZ)
    pieces: list[np.ndarray] = []
    total = 0
    clips = [
        (decode_audio(clip.path.read_bytes()).samples * 32767).astype(np.int16) for clip in ENGLISH_CLIPS
    ]
    while total < wanted:
        for samples in clips:
            pieces += [samples, gap]
            total += len(samples) + len(gap)
            if total >= wanted:
                break
    samples = np.concatenate(pieces)[:wanted]
    seconds = (samples[at : at + ENGINE_RATE_HZ] for at in range(0, len(samples), ENGINE_RATE_HZ))
    blocks = (np.pad(block, (0, ENGINE_RATE_HZ - len(block))) for block in seconds)
    return flac_of(blocks), len(samples) / ENGINE_RATE_HZ


@dataclass(slots=True)
class StreamRun:
    """One streamed upload, timed from the request's start."""

    first_snapshot_s: float | None = None
    # The first snapshot with any text (the first one may be empty: it only says the decode has started).
    first_text_s: float | None = None
    snapshot_at_s: list[float] = field(default_factory=list)
    done_s: float | None = None
    queued_events: int = 0
    final_current_time: float = 0.0
    total_time: float = 0.0
    error: str | None = None

    @property
    def gaps_s(self) -> list[float]:
        return [
            later - earlier
            for earlier, later in zip(self.snapshot_at_s, self.snapshot_at_s[1:], strict=False)
        ]


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream response; comments are skipped."""
    event, data = "message", list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


async def stream_once(client: httpx.AsyncClient, flac: bytes) -> StreamRun:
    """POST the recording to /v1/transcripts as an SSE stream and time what comes back."""
    run = StreamRun()
    started = time.perf_counter()
    async with client.stream(
        "POST",
        "/v1/transcripts",
        files={"file": ("bench.flac", flac, "audio/flac")},
        data={"use_cache": "false", "name": "bench"},
        headers={"Accept": "text/event-stream"},
    ) as response:
        if response.status_code != 200:
            await response.aread()
            raise ServerFailed(f"POST /v1/transcripts: HTTP {response.status_code}: {response.text}")
        async for event, data in sse_events(response):
            now = time.perf_counter() - started
            if event == "queued":
                run.queued_events += 1
            elif event == "transcription":
                snapshot = json.loads(data)
                if run.first_snapshot_s is None:
                    run.first_snapshot_s = now
                if run.first_text_s is None and any(p["text"] for p in snapshot["paragraphs"]):
                    run.first_text_s = now
                run.snapshot_at_s.append(now)
                run.final_current_time = snapshot["current_time"]
                run.total_time = snapshot["total_time"]
            elif event == "done":
                run.done_s = now
            elif event == "error":
                run.error = data
    return run


async def oneshot_once(client: httpx.AsyncClient, flac: bytes) -> float:
    """Wall seconds for POST /v1/audio/transcriptions of the recording."""
    started = time.perf_counter()
    response = await client.post(
        "/v1/audio/transcriptions",
        files={"file": ("bench.flac", flac, "audio/flac")},
        data={"response_format": "json"},
    )
    if response.status_code != 200:
        raise ServerFailed(f"POST /v1/audio/transcriptions: HTTP {response.status_code}: {response.text}")
    return time.perf_counter() - started


@contextlib.asynccontextmanager
async def rss_sampler(server: psutil.Process) -> AsyncIterator[dict[str, list[int]]]:
    """Samples of the app process's RSS and the sum of its engine workers' while the body runs."""
    samples: dict[str, list[int]] = {"app": [], "workers": []}

    async def sample() -> None:
        while True:
            with contextlib.suppress(psutil.NoSuchProcess):
                samples["app"].append(server.memory_info().rss)
                sizes = []
                for worker in engine_workers(server):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        sizes.append(worker.memory_info().rss)
                samples["workers"].append(sum(sizes))
            await asyncio.sleep(RSS_SAMPLE_S)

    task = asyncio.create_task(sample())
    try:
        yield samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def mb(size: float) -> str:
    return f"{size / 2**20:.0f}"


async def bench(
    base_url: str, server: psutil.Process, flac: bytes, duration_s: float, concurrent: int, rounds: int
) -> None:
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S, connect=10.0)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout) as client:
        await wait_ready(client, server)
        print(f"recording: {duration_s / 60:.1f} min, {len(flac) / 2**20:.1f} MiB FLAC", file=sys.stderr)
        await oneshot_once(client, flac)  # warm the workers and the decoder once
        idle_app = server.memory_info().rss
        # One-shot and streamed take turns, so a change in the machine's load falls on both alike.
        oneshot_times: list[float] = []
        singles: list[StreamRun] = []
        single_rss: dict[str, list[int]] = {"app": [], "workers": []}
        for _ in range(rounds):
            oneshot_times.append(await oneshot_once(client, flac))
            async with rss_sampler(server) as samples:
                singles.append(await stream_once(client, flac))
            for name, values in samples.items():
                single_rss[name] += values
            print(
                f"  one-shot: {oneshot_times[-1]:.1f} s, streamed: {singles[-1].done_s} s",
                file=sys.stderr,
                flush=True,
            )
        oneshot_s = statistics.median(oneshot_times)
        # The streamed run whose wall time is the median's (the lower middle one for an even count).
        finished = sorted((run for run in singles if run.done_s is not None), key=lambda run: run.done_s or 0)
        single = finished[(len(finished) - 1) // 2] if finished else singles[0]
        async with rss_sampler(server) as many_rss:
            many = await asyncio.gather(*(stream_once(client, flac) for _ in range(concurrent)))
    print_report(duration_s, oneshot_s, single, many, idle_app, single_rss, many_rss)
    print(f"\n{rounds} rounds: one-shot s {', '.join(f'{t:.2f}' for t in oneshot_times)};")
    print(f"streamed s {', '.join(f'{run.done_s:.2f}' if run.done_s else 'failed' for run in singles)}")


def print_report(
    duration_s: float,
    oneshot_s: float,
    single: StreamRun,
    many: list[StreamRun],
    idle_app: int,
    single_rss: dict[str, list[int]],
    many_rss: dict[str, list[int]],
) -> None:
    print(f"\n## Streamed transcript of a {duration_s / 60:.1f}-minute recording\n")
    if single.error or single.done_s is None:
        print(f"the streamed upload failed: {single.error}")
        return
    gaps = single.gaps_s
    ratio = single.done_s / oneshot_s
    rows = [
        ("one-shot wall s (median)", f"{oneshot_s:.2f}"),
        ("streamed wall s, to done (median)", f"{single.done_s:.2f}"),
        ("streamed / one-shot", f"{ratio:.3f} (target <= {TARGET_STREAM_ONESHOT_RATIO:.2f})"),
        ("first snapshot s", f"{single.first_snapshot_s:.2f}"),
        ("first text s", f"{single.first_text_s:.2f}" if single.first_text_s is not None else "-"),
        ("snapshots", str(len(single.snapshot_at_s))),
        ("snapshot gap median s", f"{statistics.median(gaps):.2f}" if gaps else "-"),
        ("snapshot gap p90 s", f"{np.percentile(gaps, 90):.2f}" if gaps else "-"),
        ("snapshot gap max s", f"{max(gaps):.2f}" if gaps else "-"),
        ("last current_time / total_time", f"{single.final_current_time:.1f} / {single.total_time:.1f}"),
    ]
    print_rows(("figure", "value"), rows)
    print(f"\n## Server RSS while streaming (MiB; app idle before: {mb(idle_app)})\n")
    rss_rows = []
    for label, samples in (("1 upload", single_rss), (f"{len(many)} uploads", many_rss)):
        rss_rows.append(
            (
                label,
                mb(statistics.median(samples["app"])),
                mb(max(samples["app"])),
                mb(statistics.median(samples["workers"])),
                mb(max(samples["workers"])),
            )
        )
    print_rows(("concurrency", "app median", "app peak", "workers median", "workers peak"), rss_rows)
    finished = [run.done_s for run in many if run.done_s is not None]
    failed = [run.error for run in many if run.error]
    print(f"\n## {len(many)} concurrent streamed uploads\n")
    print_rows(
        ("figure", "value"),
        [
            ("finished", f"{len(finished)} of {len(many)}"),
            ("failed", str(len(failed)) + (f" (first: {failed[0]})" if failed else "")),
            ("told their queue position", str(sum(1 for run in many if run.queued_events))),
            ("first snapshot s (median)", f"{statistics.median(r.first_snapshot_s or 0 for r in many):.2f}"),
            ("first text s (median)", f"{statistics.median(r.first_text_s or 0 for r in many):.2f}"),
            ("last done s", f"{max(finished):.2f}" if finished else "-"),
            ("audio s per wall s", f"{len(finished) * duration_s / max(finished):.1f}" if finished else "-"),
        ],
    )


def print_rows(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")


@contextlib.contextmanager
def server_log() -> Iterator[tempfile._TemporaryFileWrapper[bytes]]:
    with tempfile.NamedTemporaryFile() as log:
        yield log


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the recording (default 10)")
    parser.add_argument("--concurrent", type=int, default=8, help="concurrent streamed uploads (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="one-shot and streamed runs, in turn")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="engine workers (default: cores)"
    )
    args = parser.parse_args()
    flac, duration_s = recording(args.minutes)
    with server_log() as log:
        try:
            with running_server(args.workers, log) as (base_url, server):
                asyncio.run(bench(base_url, server, flac, duration_s, args.concurrent, args.rounds))
        except ServerFailed as e:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-SERVER_LOG_TAIL_CHARS:]
            sys.exit(f"transcripts: {e}\n--- server log (tail) ---\n{tail}")


if __name__ == "__main__":
    main()
