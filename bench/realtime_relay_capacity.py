"""How many relayed /v1/realtime sessions a proxy holds at real-time pace: earshot beside LiteLLM.

Used by `bench/realtime_relay.py --capacity`. One fake OpenAI Realtime provider (tests/fakes/openai.py, in a
process of its own, answering at once) is the upstream of both proxies: earshot (`earshot serve`, its default
model an `openai` engine on the fake) and LiteLLM's proxy (`litellm --config`, a `mode: realtime` model whose
api_base is the fake). Each session is a GA transcription session with manual commits: it appends 100 ms of
24 kHz PCM16 every 100 ms and commits every 10th append, so it sends 1 s of audio per turn at real-time pace;
sessions are spread over the 100 ms period and over the turn. The lag of a turn is `.completed`'s arrival
minus the commit's send time (the fake answers at once, so this is what the proxy adds, both ways). A step of
N sessions is held when the p99 lag of the turns committed in the window is at most 50 ms, every such turn
completed and no session failed. Steps go upward until one is not held, then bisect.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import psutil
from serving import step_search
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

CHUNK_S = 0.1
CHUNKS_PER_TURN = 10
MAX_LAG_MS = 50.0
CONNECT_CONCURRENCY = 32
OPEN_TIMEOUT_S = 60.0
SETTLE_S = 2.0
GRACE_S = 1.0
SAMPLES = np.arange(round(24_000 * CHUNK_S))
TONE = (np.sin(2 * np.pi * 220 * SAMPLES / 24_000) * 8000).astype("<i2").tobytes()
APPEND = json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(TONE).decode()})
COMMIT = json.dumps({"type": "input_audio_buffer.commit"})
UPDATE = json.dumps(
    {
        "type": "session.update",
        "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
    }
)
COMPLETED = "conversation.item.input_audio_transcription.completed"

# The fake provider, run as `python -c FAKE_SCRIPT PORT TRANSCRIPT` from the repo root. What it saw is
# forgotten every second (the tests keep every event; a bench would hold gigabytes of audio).
FAKE_SCRIPT = """
import asyncio, sys, uvicorn
from tests.fakes.openai import FakeOpenAI
fake = FakeOpenAI(sys.argv[2])
async def forget():
    while True:
        await asyncio.sleep(1)
        for seen in fake.sockets:
            seen.events.clear()
async def main():
    config = uvicorn.Config(fake.app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    task = asyncio.create_task(forget())
    await uvicorn.Server(config).serve()
try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


@dataclass
class Target:
    """A proxy under test: its name, the socket URL a client opens, and its processes."""

    name: str
    url: str
    pid: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RelayStep:
    """One step's figures."""

    target: str
    sessions: int
    lags_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    send_late_p99_ms: float = math.nan
    proxy_cores: float = math.nan
    fake_cores: float = math.nan
    client_cores: float = math.nan
    rss_per_session: float = math.nan

    @property
    def p99_ms(self) -> float:
        return percentile(self.lags_ms, 0.99)

    @property
    def held(self) -> bool:
        return bool(self.lags_ms) and not self.errors and self.p99_ms <= MAX_LAG_MS


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank) of the values, NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


class _Session:
    def __init__(self, phase_s: float, turn_offset: int) -> None:
        self.phase_s = phase_s
        self.turn_offset = turn_offset
        self.ws: ClientConnection | None = None
        self.commits: deque[float] = deque()
        self.turns: list[tuple[float, float]] = []  # (commit sent, lag s)
        self.problem: str | None = None


class RelayLoad:
    """N sessions streamed from this process's event loop, one ticker sending every chunk."""

    def __init__(self, url: str, headers: dict[str, str], sessions: int) -> None:
        self.url = url
        self.headers = headers
        self.sessions = [
            _Session(i * CHUNK_S / sessions, i * CHUNKS_PER_TURN // sessions) for i in range(sessions)
        ]
        self.errors: Counter[str] = Counter()
        self.send_late_s: list[float] = []
        self._receivers: list[asyncio.Task[None]] = []
        self._stopping = False

    async def open(self) -> None:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def open_one(session: _Session) -> None:
            async with gate:
                try:
                    ws = await connect(
                        self.url,
                        additional_headers=self.headers,
                        compression=None,
                        ping_interval=None,
                        open_timeout=OPEN_TIMEOUT_S,
                        max_size=None,
                    )
                    await ws.send(UPDATE)
                    async with asyncio.timeout(OPEN_TIMEOUT_S):
                        while (event := json.loads(await ws.recv())).get("type") != "session.updated":
                            if event.get("type") == "error":
                                self.errors[f"refused: {event['error'].get('code')}"] += 1
                                await ws.close()
                                return
                except InvalidStatus as e:
                    body = e.response.body.decode(errors="replace")[:120]
                    self.errors[f"refused: HTTP {e.response.status_code} {body}"] += 1
                    return
                except (OSError, TimeoutError, WebSocketException) as e:
                    self.errors[f"connect: {type(e).__name__}: {str(e)[:120]}"] += 1
                    return
            session.ws = ws
            self._receivers.append(asyncio.create_task(self._receive(session)))

        await asyncio.gather(*(open_one(session) for session in self.sessions))

    async def stream(self, t_base: float, t_stop: float) -> None:
        round_no = 0
        while (round_start := t_base + round_no * CHUNK_S) < t_stop:
            if (delay := round_start - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            commit_round = False
            for session in self.sessions:
                if session.ws is None or session.problem:
                    continue
                due = round_start + session.phase_s
                if (delay := due - time.monotonic()) > 0.001:
                    await asyncio.sleep(delay)
                now = time.monotonic()
                self.send_late_s.append(max(0.0, now - due))
                commit_round = (round_no + session.turn_offset) % CHUNKS_PER_TURN == CHUNKS_PER_TURN - 1
                try:
                    await session.ws.send(APPEND)
                    if commit_round:
                        session.commits.append(time.monotonic())
                        await session.ws.send(COMMIT)
                except ConnectionClosed as e:
                    session.problem = f"send failed: {e}"
            round_no += 1

    async def _receive(self, session: _Session) -> None:
        assert session.ws is not None
        try:
            async for message in session.ws:
                arrival = time.monotonic()
                kind = json.loads(message).get("type", "")
                if kind == COMPLETED and session.commits:
                    sent = session.commits.popleft()
                    session.turns.append((sent, arrival - sent))
                elif kind == "error" or kind.endswith(".failed"):
                    self.errors[kind] += 1
        except ConnectionClosed as e:
            if not self._stopping:
                session.problem = f"closed by the proxy: {e}"
            return
        if not self._stopping:
            session.problem = "closed by the proxy"

    async def close(self) -> None:
        self._stopping = True

        async def close_one(session: _Session) -> None:
            if session.ws is not None:
                with contextlib.suppress(OSError, WebSocketException):
                    await session.ws.close()

        await asyncio.gather(*(close_one(session) for session in self.sessions))
        await asyncio.gather(*self._receivers, return_exceptions=True)


def _tree(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


def _cpu_s(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def _rss(processes: Sequence[psutil.Process]) -> int:
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


async def _run_step(
    target: Target, fake_pid: int, sessions: int, warmup_s: float, window_s: float
) -> RelayStep:
    step = RelayStep(target.name, sessions)
    proxy, fake, client = _tree(target.pid), _tree(fake_pid), [psutil.Process()]
    idle_rss = _rss(proxy)
    load = RelayLoad(target.url, target.headers, sessions)
    await load.open()
    t_base = time.monotonic() + 0.1
    window_start, window_end = t_base + warmup_s, t_base + warmup_s + window_s
    streaming = asyncio.create_task(load.stream(t_base, window_end + GRACE_S))
    await asyncio.sleep(max(0.0, window_start - time.monotonic()))
    before = (_cpu_s(proxy), _cpu_s(fake), _cpu_s(client), time.monotonic())
    await asyncio.sleep(max(0.0, window_end - time.monotonic()))
    after = (_cpu_s(proxy), _cpu_s(fake), _cpu_s(client), time.monotonic())
    step.rss_per_session = (_rss(proxy) - idle_rss) / sessions
    await streaming
    await asyncio.sleep(GRACE_S)
    await load.close()
    elapsed = after[3] - before[3]
    step.proxy_cores, step.fake_cores, step.client_cores = (
        (a - b) / elapsed for a, b in zip(after[:3], before[:3], strict=True)
    )
    for session in load.sessions:
        if session.problem:
            step.errors[session.problem.split(":")[0]] += 1
        step.lags_ms.extend(1000 * lag for sent, lag in session.turns if window_start <= sent < window_end)
        # A turn committed in the window that never completed counts as an infinite lag.
        step.lags_ms.extend(math.inf for sent in session.commits if window_start <= sent < window_end)
    step.errors.update(load.errors)
    step.send_late_p99_ms = 1000 * percentile(load.send_late_s, 0.99)
    return step


def run_target(
    target: Target, fake_pid: int, steps: Sequence[int], warmup_s: float, window_s: float, refine: int
) -> list[RelayStep]:
    """Steps upward against one running proxy until one is not held, then a few bisecting steps."""
    results: list[RelayStep] = []

    def run(sessions: int) -> bool:
        step = _run_with_loop(target, fake_pid, sessions, warmup_s, window_s)
        results.append(step)
        print(
            f"  {target.name} x{sessions}: {'held' if step.held else 'NOT held'}; "
            f"p99 lag {step.p99_ms:.1f} ms; "
            f"errors {dict(step.errors) or 'none'}; proxy {step.proxy_cores:.2f} cores",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(SETTLE_S)
        return step.held

    step_search(run, steps, refine)
    return sorted(results, key=lambda step: step.sessions)


def _run_with_loop(
    target: Target, fake_pid: int, sessions: int, warmup_s: float, window_s: float
) -> RelayStep:
    try:
        import uvloop

        return uvloop.run(_run_step(target, fake_pid, sessions, warmup_s, window_s))
    except ImportError:
        return asyncio.run(_run_step(target, fake_pid, sessions, warmup_s, window_s))


def largest_held(steps: Sequence[RelayStep]) -> int:
    """The largest N held, counting only steps below the first that was not."""
    best = 0
    for step in sorted(steps, key=lambda s: s.sessions):
        if not step.held:
            break
        best = step.sessions
    return best


HEADER = (
    "proxy",
    "N",
    "held",
    "turns",
    "lag p50 ms",
    "lag p99 ms",
    "lag max ms",
    "errors",
    "client send late p99 ms",
    "proxy cores",
    "fake cores",
    "client cores",
    "proxy RSS per session KB",
)


def row(step: RelayStep) -> list[str]:
    """One table row for a step."""
    errors = ", ".join(f"{n} x {key}" for key, n in step.errors.most_common(3)) or "0"
    return [
        step.target,
        str(step.sessions),
        "yes" if step.held else "no",
        str(len(step.lags_ms)),
        f"{percentile(step.lags_ms, 0.5):.1f}",
        f"{step.p99_ms:.1f}",
        f"{max(step.lags_ms, default=math.nan):.1f}",
        errors,
        f"{step.send_late_p99_ms:.1f}",
        f"{step.proxy_cores:.2f}",
        f"{step.fake_cores:.2f}",
        f"{step.client_cores:.2f}",
        f"{step.rss_per_session / 1024:.0f}",
    ]
