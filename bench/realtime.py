"""Realtime benchmark: how many concurrent /v1/realtime sessions one server holds at real-time pace.

Run as `.venv/bin/python bench/realtime.py [--mode null|pocketsphinx|both] [--steps 100,200,...]
[--pocketsphinx-steps 4,8,...] [--window-s S] [--chunk-ms MS] [--quick] [--server-logs DIR]`. Every session
streams the same loop of real English speech (clips from ../shared/audio with 1 s pauses between them, 24 kHz
PCM16 mono) at real-time pace, one `input_audio_buffer.append` per chunk, with the server VAD at its defaults;
sessions are spread over the chunk period (sends) and over the loop (turns). Each step of N sessions runs on a
fresh server and database; the sessions come from a separate client process (websockets, uvloop), so its CPU
is kept apart from the server's and reported. Steps go upward until one is not held, then bisect (--refine).

  null          a catalog whose only model is the do-nothing engine: what is measured is the gateway itself
                (WebSocket, JSON, base64, resampling, Silero VAD, turns, metering). A step is held when the
                p99 event lag is at most 50 ms. RSS per session = (server RSS with N sessions - idle) / N.
  pocketsphinx  the default catalog. A step is held when every turn completes, the p99 completed latency is
                at most 1 s (--max-completed-s) and does not grow through the window. The ceiling it is
                compared with is cores / (raw RTF): the engine's one-shot RTF on the same audio, in-process.

Event lag. The server can decide that speech started only once it holds the 32 ms VAD window after the onset
(`audio_start_ms + prefix_padding_ms`), and that speech stopped (and, with the null engine, completed) only
once it holds `silence_duration_ms`, rounded up to whole windows, after `audio_end_ms`. The lag of an event is
its arrival minus the moment the client sent the chunk that gave the server that much audio, counted through
the server's own resampler (soxr holds back a few ms, so a decision can need the next chunk); clamped at 0.
With pocketsphinx: first-delta latency = the first delta's arrival minus the send time of the chunk holding
the onset; completed latency = `completed`'s arrival minus the send time of the speech_stopped decision.
A turn that never completes counts as an infinite lag. It prints markdown tables; it never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import csv
import json
import math
import multiprocessing
import os
import re
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx
import numpy as np
import psutil
import soxr
from serving import earshot_server, fresh_database, ignoring_interrupts
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import ENGINE_RATE_HZ, Audio, StreamResampler, float_to_pcm16
from earshot.audio.vad import WINDOW_MS, VadParams

REPO = Path(__file__).resolve().parents[1]
AUDIO_DIR = REPO.parent / "shared" / "audio"
INPUT_RATE_HZ = 24_000
LOOP_MIN_S = 25.0
CLIP_MIN_S, CLIP_MAX_S = 2.0, 4.0
GAP_S = 1.0
VAD = VadParams()
STARTED_DECISION_MS = VAD.prefix_padding_ms + WINDOW_MS
STOPPED_DECISION_MS = math.ceil(VAD.silence_duration_ms / WINDOW_MS) * WINDOW_MS
NULL_CATALOG = 'models:\n  "null":\n    engine: "null"\n'
NULL_STEPS = (100, 200, 300, 400, 500, 600, 800, 1000, 1250, 1500, 2000)
QUICK_NULL_STEPS = (10, 40)
QUICK_POCKETSPHINX_STEPS = (1, 2)
# pocketsphinx steps, as fractions of the ceiling cores / RTF, when none are given.
POCKETSPHINX_FRACTIONS = (0.5, 0.7, 0.85, 1.0, 1.15, 1.3)
MAX_EVENT_LAG_MS = 50.0
MIN_WINDOW_S = 5.0
# The clients are behind (their timestamps are then late too) when 5 % of sends go out this late or later.
MAX_SEND_LATE_MS = 50.0
CONNECT_CONCURRENCY = 32
OPEN_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 120.0
IDLE_SETTLE_S = 1.0
RAMP_TIMEOUT_S = 120.0
RTF_RUNS = 3
SLEEP_GRANULARITY_S = 0.001
CLIENT_JOIN_TIMEOUT_S = 60.0
CLIENT_EXIT_TIMEOUT_S = 5.0
CORES = len(os.sched_getaffinity(0))
REALTIME_PATH = "/v1/realtime?intent=transcription"
LOG_PROBLEM = re.compile(r"\b(ERROR|WARNING|CRITICAL)\b")
EXPECTED_WARNING = "no API keys exist"

# A session's log as the client process sends it back: its phase in the chunk period (s), first round, send
# time of each chunk, events (kind, item id, audio ms, arrival), and why it ended early if it did.
EventRecord = tuple[str, str, int, float]
SessionLog = tuple[float, int, list[float], list[EventRecord], str | None]


class BenchFailed(RuntimeError):
    """The server or a client process failed in a way that ends the run; the message says how."""


# --- audio ---


@dataclass(frozen=True, slots=True)
class SpeechLoop:
    """The audio every session streams, pre-encoded once: one append event per chunk."""

    messages: tuple[bytes, ...]
    chunk_ms: int
    audio: Audio
    clip_names: tuple[str, ...]

    @property
    def duration_s(self) -> float:
        return len(self.messages) * self.chunk_ms / 1000


def load_loop(chunk_ms: int) -> SpeechLoop:
    """English clips of 2-4 s from ../shared/audio, each after 1 s of silence, until the loop lasts 25 s."""
    index = AUDIO_DIR / "INDEX.tsv"
    if not index.is_file():
        sys.exit(f"realtime: {index} is absent (the shared audio folder sits beside the repo)")
    with index.open(newline="") as f:
        rows = [
            row
            for row in csv.DictReader(f, delimiter="\t")
            if row["transcript"]
            and not row["transcript"].startswith("LEFT:")
            and CLIP_MIN_S <= float(row["duration_seconds"]) <= CLIP_MAX_S
        ]
    gap = np.zeros(int(GAP_S * ENGINE_RATE_HZ), dtype=np.float32)
    pieces: list[np.ndarray] = []
    names: list[str] = []
    total = 0
    for row in rows:
        samples = decode_audio((AUDIO_DIR / row["relpath"]).read_bytes()).samples
        pieces += [gap, samples]
        names.append(Path(row["relpath"]).name)
        total += len(gap) + len(samples)
        if total >= LOOP_MIN_S * ENGINE_RATE_HZ:
            break
    if not names:
        sys.exit("realtime: no English clip of 2-4 s in INDEX.tsv")
    pieces.append(gap)
    at_input_rate = np.asarray(
        soxr.resample(np.concatenate(pieces), ENGINE_RATE_HZ, INPUT_RATE_HZ, quality="HQ"), dtype=np.float32
    )
    chunk_samples = INPUT_RATE_HZ * chunk_ms // 1000
    padded = -(-len(at_input_rate) // chunk_samples) * chunk_samples
    pcm = float_to_pcm16(np.pad(at_input_rate, (0, padded - len(at_input_rate))))
    chunk_bytes = chunk_samples * 2
    messages = tuple(
        json.dumps(
            {
                "type": "input_audio_buffer.append",
                "audio": base64.b64encode(pcm[i : i + chunk_bytes]).decode(),
            }
        ).encode()
        for i in range(0, len(pcm), chunk_bytes)
    )
    engine_audio = np.asarray(
        soxr.resample(np.frombuffer(pcm, "<i2") / 32768.0, INPUT_RATE_HZ, ENGINE_RATE_HZ, quality="HQ"),
        dtype=np.float32,
    )
    return SpeechLoop(messages, chunk_ms, Audio(engine_audio), tuple(names))


class ServerClock:
    """After which chunk the server has heard a given stretch of a session's audio (through its resampler)."""

    def __init__(self, chunk_ms: int) -> None:
        self._resampler = StreamResampler(INPUT_RATE_HZ)
        self._chunk = np.zeros(INPUT_RATE_HZ * chunk_ms // 1000, dtype=np.float32)
        self._heard: list[int] = []  # engine-rate samples out of the resampler after each chunk

    def chunk_reaching(self, audio_ms: int) -> int:
        """Index of the first chunk after which the server holds the session's first `audio_ms`."""
        sample = audio_ms * ENGINE_RATE_HZ // 1000
        while not self._heard or self._heard[-1] < sample:
            before = self._heard[-1] if self._heard else 0
            self._heard.append(before + len(self._resampler.feed(self._chunk)))
        return bisect.bisect_left(self._heard, sample)


# --- the client processes ---


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """What one client process runs: which sessions, with which phase and loop offset."""

    url: str
    messages: tuple[bytes, ...]
    chunk_s: float
    sessions: tuple[tuple[float, int], ...]  # (phase in the chunk period in s, loop offset in chunks)


@dataclass(slots=True)
class _Session:
    phase_s: float
    offset: int
    ws: ClientConnection | None = None
    start_round: int | None = None
    sent: list[float] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    problem: str | None = None


class LoadClient:
    """Streams the loop on many sessions at once from one event loop: one ticker sends every chunk."""

    def __init__(self, spec: ClientSpec, t_base: float) -> None:
        self.spec = spec
        self.t_base = t_base
        self.t_stop = math.inf
        self.sessions = [_Session(phase, offset) for phase, offset in spec.sessions]
        self.connect_failures: list[str] = []
        self.errors: Counter[str] = Counter()
        self._stopping = False
        self._receivers: list[asyncio.Task[None]] = []

    async def ramp(self) -> None:
        """Open every session; each starts streaming at its next phase slot once it is open."""
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def open_one(session: _Session) -> None:
            async with gate:
                try:
                    session.ws = await connect(
                        self.spec.url,
                        compression=None,
                        ping_interval=None,
                        open_timeout=OPEN_TIMEOUT_S,
                        max_size=None,
                        write_limit=2**20,
                    )
                except (OSError, TimeoutError, WebSocketException) as e:
                    self.connect_failures.append(f"{type(e).__name__}: {e}")
                    return
            self._receivers.append(asyncio.create_task(self._receive(session)))
            since = time.monotonic() + SLEEP_GRANULARITY_S - self.t_base - session.phase_s
            session.start_round = max(0, math.ceil(since / self.spec.chunk_s))

        await asyncio.gather(*(open_one(session) for session in self.sessions))

    async def stream(self) -> None:
        """Send chunk after chunk, each session at its own phase in the chunk period, until `t_stop`."""
        period = self.spec.chunk_s
        messages = self.spec.messages
        loop_chunks = len(messages)
        round_no = 0
        while True:
            round_start = self.t_base + round_no * period
            if round_start >= self.t_stop:
                return
            if (delay := round_start - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            for session in self.sessions:
                start = session.start_round
                if start is None or start > round_no or session.ws is None or session.problem:
                    continue
                delay = round_start + session.phase_s - time.monotonic()
                if delay > SLEEP_GRANULARITY_S:
                    await asyncio.sleep(delay)
                session.sent.append(time.monotonic())
                chunk = round_no - start
                try:
                    await session.ws.send(messages[(session.offset + chunk) % loop_chunks], text=True)
                except ConnectionClosed as e:
                    session.problem = session.problem or f"send failed: {e}"
            round_no += 1

    async def _receive(self, session: _Session) -> None:
        assert session.ws is not None
        first_delta: set[str] = set()
        try:
            async for message in session.ws:
                arrival = time.monotonic()
                event = json.loads(message)
                kind = event.get("type", "")
                if kind == "input_audio_buffer.speech_started":
                    session.events.append(("started", event["item_id"], event["audio_start_ms"], arrival))
                elif kind == "input_audio_buffer.speech_stopped":
                    session.events.append(("stopped", event["item_id"], event["audio_end_ms"], arrival))
                elif kind == "conversation.item.input_audio_transcription.delta":
                    if event["item_id"] not in first_delta:
                        first_delta.add(event["item_id"])
                        session.events.append(("delta", event["item_id"], 0, arrival))
                elif kind == "conversation.item.input_audio_transcription.completed":
                    session.events.append(("completed", event["item_id"], 0, arrival))
                elif kind == "conversation.item.input_audio_transcription.failed":
                    self.errors[f"failed: {event['error'].get('code')}"] += 1
                elif kind == "error":
                    self.errors[f"error: {event['error'].get('code')}"] += 1
        except ConnectionClosed as e:
            if not self._stopping:
                session.problem = session.problem or f"closed by the server: {e}"
            return
        if not self._stopping:
            session.problem = session.problem or "closed by the server"

    async def close(self) -> None:
        """Close every session (as a client that is done would) and wait for the receivers to end."""
        self._stopping = True

        async def close_one(session: _Session) -> None:
            if session.ws is not None:
                with contextlib.suppress(OSError, WebSocketException):
                    await session.ws.close()

        await asyncio.gather(*(close_one(session) for session in self.sessions))
        await asyncio.gather(*self._receivers, return_exceptions=True)

    def logs(self) -> list[SessionLog]:
        return [
            (s.phase_s, -1 if s.start_round is None else s.start_round, s.sent, s.events, s.problem)
            for s in self.sessions
        ]


async def _client(conn: Connection, spec: ClientSpec) -> None:
    conn.send(("ready",))
    _, t_base = await asyncio.to_thread(conn.recv)
    client = LoadClient(spec, t_base)
    streaming = asyncio.create_task(client.stream())
    stop = asyncio.create_task(asyncio.to_thread(conn.recv))
    await client.ramp()
    conn.send(("connected", time.monotonic(), client.connect_failures))
    _, client.t_stop = await stop
    await streaming
    await client.close()
    conn.send(("result", client.logs(), dict(client.errors)))


def client_main(conn: Connection, spec: ClientSpec) -> None:
    """A client process: it ignores Ctrl-C (the bench stops it) and runs on uvloop when it can."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import uvloop

        uvloop.run(_client(conn, spec))
    except ImportError:
        asyncio.run(_client(conn, spec))


@contextlib.contextmanager
def client_processes(
    url: str, loop: SpeechLoop, sessions: int, processes: int
) -> Iterator[list[tuple[multiprocessing.process.BaseProcess, Connection]]]:
    """Started client processes sharing `sessions` between them; terminated on exit."""
    context = multiprocessing.get_context("spawn")
    period = loop.chunk_ms / 1000
    # Sessions spread evenly over the chunk period (sends) and over the loop (turns end at different times).
    plan = [(i * period / sessions, i * len(loop.messages) // sessions) for i in range(sessions)]
    started: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    finished = False
    try:
        for p in range(min(processes, sessions)):
            ours, theirs = context.Pipe()
            spec = ClientSpec(
                url.replace("http://", "ws://") + REALTIME_PATH, loop.messages, period, (*plan[p::processes],)
            )
            process = context.Process(target=client_main, args=(theirs, spec), daemon=True)
            process.start()
            theirs.close()
            started.append((process, ours))
        yield started
        finished = True
    finally:
        with ignoring_interrupts():
            for client, conn in started:
                conn.close()
                client.join(timeout=CLIENT_EXIT_TIMEOUT_S if finished else 0)
                if client.is_alive():
                    client.terminate()
                    client.join()


def receive(conn: Connection, expected: str, timeout_s: float) -> tuple[Any, ...]:
    """The next message of a client process, which must be `expected`."""
    if not conn.poll(timeout_s):
        raise BenchFailed(f"a client process sent no {expected!r} within {timeout_s:g} s")
    message: tuple[Any, ...] = conn.recv()
    if message[0] != expected:
        raise BenchFailed(f"a client process sent {message[0]!r} instead of {expected!r}")
    return message


# --- measuring the server ---


@dataclass(frozen=True, slots=True)
class Sample:
    """CPU seconds and RSS of the server tree and the clients, and the machine's busy CPU, at one moment."""

    at: float
    gateway_cpu_s: float
    loop_cpu_s: float  # the gateway's main thread, where its event loop runs
    engine_cpu_s: float
    client_cpu_s: float
    machine_busy_s: float
    gateway_rss: int
    engine_rss: int


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


async def warm_up(base_url: str, loop: SpeechLoop) -> None:
    """One short session, sent as fast as it goes, so the VAD and the engine's stream path are loaded."""
    url = base_url.replace("http://", "ws://") + REALTIME_PATH
    async with connect(url, compression=None, ping_interval=None, open_timeout=OPEN_TIMEOUT_S) as ws:
        for message in loop.messages[: 5000 // loop.chunk_ms]:
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


# --- one step ---


@dataclass(slots=True)
class Step:
    """What one step of N sessions measured."""

    mode: str
    sessions: int
    window_s: float
    max_completed_ms: float
    t_base: float = 0.0
    started_ms: list[float] = field(default_factory=list)
    stopped_ms: list[float] = field(default_factory=list)
    completed_ms: list[float] = field(default_factory=list)
    completed_order: list[tuple[float, float]] = field(default_factory=list)  # (decision send time, lag ms)
    first_delta_ms: list[float] = field(default_factory=list)
    send_late_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    idle_rss: int = 0
    before: Sample | None = None
    after: Sample | None = None
    load_1m: float = 0.0
    ramp_s: float = 0.0
    server_log: list[str] = field(default_factory=list)
    server_traceback: str = ""

    @property
    def events_ms(self) -> list[float]:
        return self.started_ms + self.stopped_ms + self.completed_ms

    def cores(self, name: str) -> float:
        assert self.before is not None and self.after is not None
        used = float(getattr(self.after, name)) - float(getattr(self.before, name))
        return used / (self.after.at - self.before.at)

    @property
    def final(self) -> Sample:
        """The sample at the window's end."""
        assert self.after is not None
        return self.after

    @property
    def rss(self) -> int:
        return self.final.gateway_rss + self.final.engine_rss

    @property
    def rss_per_session(self) -> float:
        return (self.rss - self.idle_rss) / self.sessions

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def client_late(self) -> bool:
        return percentile(self.send_late_ms, 0.95) > MAX_SEND_LATE_MS

    def backlog_growth_ms(self) -> float:
        """Median completed lag over the window's last third minus its first third."""
        ordered = [lag for _, lag in sorted(self.completed_order)]
        third = len(ordered) // 3
        if third == 0:
            return 0.0
        return statistics.median(ordered[-third:]) - statistics.median(ordered[:third])

    @property
    def held(self) -> bool:
        """Held: no errors, clients on time, and the lag within its limit (completed: not growing)."""
        if self.error_count or self.client_late or not self.completed_ms:
            return False
        if self.mode == "null":
            return percentile(self.events_ms, 0.99) <= MAX_EVENT_LAG_MS
        return (
            percentile(self.completed_ms, 0.99) <= self.max_completed_ms
            and self.backlog_growth_ms() <= self.max_completed_ms / 2
        )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values (inf counts as a value: a turn that never completed)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def analyse(step: Step, logs: list[SessionLog], loop: SpeechLoop, window: tuple[float, float]) -> None:
    """Turn the sessions' send times and events into lags within the window."""
    start, end = window
    clock = ServerClock(loop.chunk_ms)
    period = loop.chunk_ms / 1000

    def sent_at(sent: list[float], chunk: int) -> float | None:
        return sent[chunk] if chunk < len(sent) else None

    for phase, first_round, sent, events, problem in logs:
        if problem:
            step.errors[problem.split(":")[0]] += 1
        if first_round < 0:
            continue
        for chunk, at in enumerate(sent):
            if start <= at <= end:
                due = step.t_base + phase + (first_round + chunk) * period
                step.send_late_ms.append(max(0.0, (at - due) * 1000))
        items: dict[str, dict[str, tuple[int, float]]] = {}
        for kind, item_id, audio_ms, arrival in events:
            items.setdefault(item_id, {})[kind] = (audio_ms, arrival)
        heard = 0
        for item in items.values():
            if "started" in item:
                audio_start_ms, arrival = item["started"]
                # At the session's very start the padding is cut short, so the onset isn't known.
                if audio_start_ms > 0:
                    onset_ms = audio_start_ms + VAD.prefix_padding_ms
                    decided = sent_at(sent, clock.chunk_reaching(onset_ms + WINDOW_MS))
                    if decided is not None and start <= decided <= end:
                        heard += 1
                        step.started_ms.append(max(0.0, (arrival - decided) * 1000))
                    onset = sent_at(sent, onset_ms // loop.chunk_ms)
                    if onset is not None and start <= onset <= end and "delta" in item:
                        step.first_delta_ms.append(max(0.0, (item["delta"][1] - onset) * 1000))
            if "stopped" in item:
                audio_end_ms, arrival = item["stopped"]
                decided = sent_at(sent, clock.chunk_reaching(audio_end_ms + STOPPED_DECISION_MS))
                if decided is None:
                    step.errors["event before its audio"] += 1
                    continue
                if start <= decided <= end:
                    heard += 1
                    step.stopped_ms.append(max(0.0, (arrival - decided) * 1000))
                    lag = (
                        max(0.0, (item["completed"][1] - decided) * 1000) if "completed" in item else math.inf
                    )
                    step.completed_ms.append(lag)
                    step.completed_order.append((decided, lag))
        if not heard and not problem:
            step.errors["silent session"] += 1


def run_step(
    mode: str, sessions: int, loop: SpeechLoop, args: argparse.Namespace, config: Path | None
) -> Step:
    """N sessions against a fresh server for a warm-up and a measurement window."""
    max_completed_ms = args.max_completed_s * 1000 if mode == "pocketsphinx" else math.inf
    window_s = args.window_s if mode == "null" else args.pocketsphinx_window_s
    step = Step(mode, sessions, window_s, max_completed_ms)
    grace_s = 1.0 if mode == "null" else args.max_completed_s + 1.0
    workers = "1" if mode == "null" else str(args.engine_workers)
    log_path = args.server_logs / f"{mode}-{sessions}.log" if args.server_logs else None
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
                asyncio.run(warm_up(base_url, loop))
                time.sleep(IDLE_SETTLE_S)
                step.idle_rss = _rss(server) + sum(_rss(w) for w in server.children(recursive=True))
                measure(step, base_url, server, loop, args, grace_s)
        except BenchFailed as e:
            lines, traceback = log_problems(log)
            problems = "\n".join([*lines, traceback])
            raise BenchFailed(f"{mode} x{sessions}: {e}\n--- server log problems ---\n{problems}") from e
        step.server_log, step.server_traceback = log_problems(log)
    return step


def measure(
    step: Step,
    base_url: str,
    server: psutil.Process,
    loop: SpeechLoop,
    args: argparse.Namespace,
    grace_s: float,
) -> None:
    """Ramp the sessions up, sample the server over the window, then collect and analyse the clients' logs."""
    with client_processes(base_url, loop, step.sessions, args.client_processes) as clients:
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


# --- the raw engine ---


def raw_rtf(loop: SpeechLoop) -> float:
    """pocketsphinx's one-shot RTF on the loop, in-process with one worker (median of a few runs)."""
    from earshot.engines.base import TranscribeOptions, transcribe
    from earshot.engines.workers import WorkerPool
    from earshot.routing.catalog import Catalog
    from earshot.routing.router import Router

    async def run() -> list[float]:
        pool = WorkerPool(1)
        router = Router(Catalog.embedded(), pool)
        try:
            await router.start()
            engine = router.route(None).engine
            await transcribe(engine, loop.audio, TranscribeOptions())
            times = []
            for _ in range(RTF_RUNS):
                started = time.perf_counter()
                await transcribe(engine, loop.audio, TranscribeOptions())
                times.append((time.perf_counter() - started) / loop.audio.duration_s)
            return times
        finally:
            await router.stop()
            await asyncio.to_thread(pool.shutdown)

    return statistics.median(asyncio.run(run()))


# --- report ---


def _ms(value: float) -> str:
    return "inf" if math.isinf(value) else "-" if math.isnan(value) else f"{value:.0f}"


def _s(value: float) -> str:
    return "inf" if math.isinf(value) else "-" if math.isnan(value) else f"{value / 1000:.2f}"


def _errors(step: Step) -> str:
    return ", ".join(f"{n} {what}" for what, n in step.errors.most_common()) or "0"


def print_table(header: Sequence[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def null_row(step: Step) -> list[str]:
    lags = step.events_ms
    by_kind = "/".join(
        _ms(percentile(x, 0.99)) for x in (step.started_ms, step.stopped_ms, step.completed_ms)
    )
    return [
        str(step.sessions),
        "yes" if step.held else "client late" if step.client_late else "no",
        str(len(lags)),
        _ms(percentile(lags, 0.5)),
        _ms(percentile(lags, 0.99)),
        _ms(max(lags, default=math.nan)),
        by_kind,
        f"{step.cores('gateway_cpu_s'):.2f}",
        f"{step.cores('loop_cpu_s'):.2f}",
        f"{step.cores('gateway_cpu_s') * 1000 / step.sessions:.2f}",
        f"{step.cores('client_cpu_s'):.2f}",
        f"{step.cores('machine_busy_s'):.2f}",
        f"{step.load_1m:.2f}",
        f"{step.rss / 2**20:.0f}",
        f"{step.rss_per_session / 1024:.0f}",
        _ms(percentile(step.send_late_ms, 0.99)),
        f"{step.ramp_s:.1f}",
        _errors(step),
    ]


NULL_HEADER = (
    "N",
    "held",
    "events",
    "lag p50 ms",
    "lag p99 ms",
    "lag max ms",
    "p99 start/stop/done ms",
    "gateway cores",
    "loop thread cores",
    "gateway CPU ms per session-s",
    "client cores",
    "machine cores",
    "load 1m",
    "server RSS MB",
    "RSS/session KB",
    "send late p99 ms",
    "ramp s",
    "errors",
)


def pocketsphinx_row(step: Step) -> list[str]:
    return [
        str(step.sessions),
        "yes" if step.held else "client late" if step.client_late else "no",
        str(len(step.completed_ms)),
        _s(percentile(step.completed_ms, 0.5)),
        _s(percentile(step.completed_ms, 0.99)),
        _s(max(step.completed_ms, default=math.nan)),
        f"{step.backlog_growth_ms() / 1000:+.2f}",
        _s(percentile(step.first_delta_ms, 0.5)),
        _s(percentile(step.first_delta_ms, 0.99)),
        f"{_ms(percentile(step.started_ms, 0.99))}/{_ms(percentile(step.stopped_ms, 0.99))}",
        f"{step.cores('gateway_cpu_s'):.2f}",
        f"{step.cores('engine_cpu_s'):.2f}",
        f"{step.cores('client_cpu_s'):.2f}",
        f"{step.cores('machine_busy_s'):.2f}",
        f"{step.load_1m:.2f}",
        f"{step.final.gateway_rss / 2**20:.0f}/{step.final.engine_rss / 2**20:.0f}",
        f"{step.rss_per_session / 2**20:.1f}",
        _errors(step),
    ]


POCKETSPHINX_HEADER = (
    "N",
    "held",
    "turns",
    "completed p50 s",
    "completed p99 s",
    "completed max s",
    "growth s",
    "first delta p50 s",
    "first delta p99 s",
    "p99 start/stop ms",
    "gateway cores",
    "engine cores",
    "client cores",
    "machine cores",
    "load 1m",
    "gateway/engine RSS MB",
    "RSS/session MB",
    "errors",
)


def run_mode(
    mode: str, steps: Sequence[int], loop: SpeechLoop, args: argparse.Namespace, config: Path | None
) -> list[Step]:
    """Steps upward until one is not held, then a few bisecting steps between the last held and it."""
    results: list[Step] = []

    def run(sessions: int) -> bool:
        print(f"  {mode} x{sessions}: starting a server", file=sys.stderr, flush=True)
        step = run_step(mode, sessions, loop, args, config)
        results.append(step)
        print(
            f"  {mode} x{sessions}: {'held' if step.held else 'NOT held'}; p99 event lag "
            f"{_ms(percentile(step.events_ms, 0.99))} ms, "
            f"p99 completed {_ms(percentile(step.completed_ms, 0.99))} ms, "
            f"errors {_errors(step)}",
            file=sys.stderr,
            flush=True,
        )
        for line in step.server_log:
            print(f"    server log: {line}", file=sys.stderr, flush=True)
        if step.server_traceback:
            print(f"    server log, first traceback:\n{step.server_traceback}", file=sys.stderr, flush=True)
        return step.held

    held, failed = 0, 0
    for sessions in steps:
        if not run(sessions):
            failed = sessions
            break
        held = sessions
    for _ in range(args.refine if failed else 0):
        middle = (held + failed) // 2
        if failed - held <= max(1, held // 20) or middle in (held, failed):
            break
        if run(middle):
            held = middle
        else:
            failed = middle
    return sorted(results, key=lambda step: step.sessions)


def largest_held(steps: Sequence[Step]) -> int:
    return max((step.sessions for step in steps if step.held), default=0)


def parse_steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from e
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError("steps must be positive")
    return steps


def pocketsphinx_steps(ceiling: float) -> tuple[int, ...]:
    return tuple(sorted({max(1, round(ceiling * fraction)) for fraction in POCKETSPHINX_FRACTIONS}))


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
    parser.add_argument("--mode", choices=("null", "pocketsphinx", "both"), default="both")
    parser.add_argument(
        "--steps",
        type=parse_steps,
        help=f"session counts for null (default {','.join(map(str, NULL_STEPS))})",
    )
    parser.add_argument(
        "--pocketsphinx-steps",
        type=parse_steps,
        help="session counts for pocketsphinx (default: fractions of the ceiling 2 / raw RTF)",
    )
    parser.add_argument("--window-s", type=float, default=15.0, help="measurement window per null step")
    parser.add_argument(
        "--pocketsphinx-window-s",
        type=float,
        default=20.0,
        help="measurement window per pocketsphinx step (longer: each session ends a turn only every ~4 s)",
    )
    parser.add_argument("--warmup-s", type=float, default=4.0, help="streaming before the window opens")
    parser.add_argument("--chunk-ms", type=int, default=100, help="audio per append message")
    parser.add_argument(
        "--max-completed-s", type=float, default=1.0, help="pocketsphinx: p99 completed limit"
    )
    parser.add_argument("--engine-workers", type=int, default=CORES, help="pocketsphinx server workers")
    parser.add_argument("--client-processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--refine", type=int, default=2, help="bisecting steps after the first failure")
    parser.add_argument("--server-logs", type=Path, help="keep each step's server log in this folder")
    parser.add_argument("--quick", action="store_true", help="tiny steps and a short window (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.window_s = min(args.window_s, 5.0)
        args.pocketsphinx_window_s = min(args.pocketsphinx_window_s, 5.0)
        args.warmup_s = min(args.warmup_s, 2.0)
    if (
        min(args.window_s, args.pocketsphinx_window_s) < MIN_WINDOW_S
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
    ps_steps: list[Step] = []
    rtf = math.nan
    started = time.monotonic()
    try:
        if args.mode in ("null", "both"):
            with tempfile.TemporaryDirectory(prefix="earshot-bench-") as directory:
                config = Path(directory) / "null.yaml"
                config.write_text(NULL_CATALOG)
                steps = args.steps or (QUICK_NULL_STEPS if args.quick else NULL_STEPS)
                null_steps = run_mode("null", steps, loop, args, config)
        if args.mode in ("pocketsphinx", "both"):
            print("  pocketsphinx: raw one-shot RTF on the loop", file=sys.stderr, flush=True)
            rtf = raw_rtf(loop)
            ceiling = CORES / rtf
            steps = args.pocketsphinx_steps or (args.steps if args.mode == "pocketsphinx" else None)
            steps = steps or (QUICK_POCKETSPHINX_STEPS if args.quick else pocketsphinx_steps(ceiling))
            print(f"  pocketsphinx: RTF {rtf:.3f}, ceiling {ceiling:.1f}; steps {steps}", file=sys.stderr)
            ps_steps = run_mode("pocketsphinx", steps, loop, args, None)
    except BenchFailed as e:
        sys.exit(f"realtime: {e}")
    except KeyboardInterrupt:
        sys.exit("\nrealtime: interrupted; servers and clients stopped")
    load = os.getloadavg()
    print(
        f"\nLoop of {loop.duration_s:.1f} s ({', '.join(loop.clip_names)}), {args.chunk_ms} ms chunks; "
        f"windows {args.window_s:g} s (null) and {args.pocketsphinx_window_s:g} s (pocketsphinx) after "
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
    if ps_steps:
        print("\npocketsphinx: completed latency after the VAD endpoint, first delta after speech onset\n")
        print_table(POCKETSPHINX_HEADER, [pocketsphinx_row(step) for step in ps_steps])
        print(
            f"\npocketsphinx: largest N held in real time (p99 completed ≤ {args.max_completed_s:g} s): "
            f"{largest_held(ps_steps) or 'none'}; "
            f"raw one-shot RTF {rtf:.3f} on this audio, "
            f"ceiling {CORES} / RTF = {CORES / rtf:.1f} sessions"
        )
    print_server_logs([*null_steps, *ps_steps])


def print_server_logs(steps: Sequence[Step]) -> None:
    """Each step's unexpected server log lines, so problems in the server aren't lost in stderr."""
    noisy = [step for step in steps if step.server_log or step.server_traceback]
    if not noisy:
        print("\nserver logs: no warnings or errors beyond the anonymous-mode notice")
        return
    print("\nserver logs (warnings and errors, counted; first traceback):")
    for step in noisy:
        print(f"- {step.mode} x{step.sessions}:")
        for line in step.server_log:
            print(f"    {line}")
        if step.server_traceback:
            print("    " + step.server_traceback.replace("\n", "\n    "))


if __name__ == "__main__":
    main()
