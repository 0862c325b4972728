"""The realtime bench's load: the speech loop every session streams, and the client processes that stream it.

Each client process opens its share of the sessions (sending each its setup events first, e.g. the
`session.update` that chooses the model), streams them from one event loop, one chunk per session per period,
and sends back every session's send times and events (a SessionLog) when told to stop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import json
import math
import multiprocessing
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from serving import REPO, ignoring_interrupts
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import ENGINE_RATE_HZ, Audio, float_to_pcm16

AUDIO_DIR = REPO.parent / "shared" / "audio"
INPUT_RATE_HZ = 24_000
LOOP_MIN_S = 25.0
CLIP_MIN_S, CLIP_MAX_S = 2.0, 4.0
GAP_S = 1.0
CONNECT_CONCURRENCY = 32
OPEN_TIMEOUT_S = 60.0
SLEEP_GRANULARITY_S = 0.001
CLIENT_EXIT_TIMEOUT_S = 5.0
REALTIME_PATH = "/v1/realtime?intent=transcription"

# A session's log as the client process sends it back: its phase in the chunk period (s), first round, send
# time of each chunk, events (kind, item id, audio ms, arrival), and why it ended early if it did.
EventRecord = tuple[str, str, int, float]
SessionLog = tuple[float, int, list[float], list[EventRecord], str | None]


class BenchFailed(RuntimeError):
    """The server or a client process failed in a way that ends the run; the message says how."""


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


def model_update(model: str) -> bytes:
    """The GA `session.update` that has a transcription session transcribe with `model`."""
    session = {"type": "transcription", "audio": {"input": {"transcription": {"model": model}}}}
    return json.dumps({"type": "session.update", "session": session}).encode()


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """What one client process runs: which sessions, with which phase and loop offset, after which setup."""

    url: str
    messages: tuple[bytes, ...]
    chunk_s: float
    sessions: tuple[tuple[float, int], ...]  # (phase in the chunk period in s, loop offset in chunks)
    setup: tuple[bytes, ...] = ()  # sent on each session once it is open, before any audio


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
                    for message in self.spec.setup:
                        await session.ws.send(message, text=True)
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
    url: str, loop: SpeechLoop, sessions: int, processes: int, setup: tuple[bytes, ...] = ()
) -> Iterator[list[tuple[multiprocessing.process.BaseProcess, Connection]]]:
    """Started client processes sharing `sessions` between them, each session sent `setup` first; terminated
    on exit."""
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
                url.replace("http://", "ws://") + REALTIME_PATH,
                loop.messages,
                period,
                (*plan[p::processes],),
                setup,
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
