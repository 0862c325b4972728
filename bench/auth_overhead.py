"""Auth overhead benchmark: requests/s of a 1 s transcription with auth off, with a key, and with credits.

Run as `.venv/bin/python bench/auth_overhead.py [--window S] [--rounds N] [--clients 1 4] [--backends ...]`.
For each backend it starts three servers, each on a fresh database, and keeps them all running:

  off          no key in the database: requests are anonymous (a usage record is still written)
  key          one key with unlimited credit: every request authenticates with it
  key+credits  one key with a credit balance: every request debits credit with its usage record

Only one server is under load at a time. The modes take turns in short windows, in the order
off, key, key+credits, key+credits, key, off, so a machine whose speed drifts (other tenants, a shared
core) slows every mode alike. The overhead is the median over rounds of each mode's rate against the
"off" windows of the same round; the gateway's own CPU per request is shown too, because on a noisy
machine it is the steadier signal. Afterwards every database must hold exactly one usage record per
request sent (and the debited credit must match). It prints a table and a verdict; it never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx
import psutil
from serving import earshot_server, fresh_database

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import float_to_pcm16

REPO = Path(__file__).resolve().parents[1]
AUDIO_DIR = REPO.parent / "shared" / "audio"
MODES = ("off", "key", "key+credits")
BACKENDS = ("sqlite", "postgresql")
CLIP_S = 1.0
CREDIT_SECONDS = 1_000_000
TARGET_OVERHEAD_PCT = 10.0
WARMUP_REQUESTS = 8
READY_TIMEOUT_S = 120.0
DEFAULT_POSTGRES_URL = os.environ.get(
    "EARSHOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


class BenchFailed(RuntimeError):
    """A server, database or request failed; the message says which."""


@dataclass(slots=True)
class Tally:
    """Everything measured for one mode at one client count, over all its windows."""

    requests: int = 0
    wall_s: float = 0.0
    gateway_cpu_s: float = 0.0
    engine_cpu_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    window_rates: list[float] = field(default_factory=list)

    @property
    def gateway_cpu_ms(self) -> float:
        return self.gateway_cpu_s * 1000 / self.requests if self.requests else math.nan

    @property
    def rate(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return (
            ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] if ordered else math.nan
        )


@dataclass(slots=True)
class Server:
    """One running server under test."""

    mode: str
    base_url: str
    process: subprocess.Popen[bytes]
    database_url: str
    key: str | None
    sent: int = 0


def load_clip() -> bytes:
    """The first second of the first English clip in ../shared/audio, as 16 kHz PCM16 WAV."""
    index = AUDIO_DIR / "INDEX.tsv"
    if not index.is_file():
        sys.exit(f"auth_overhead: {index} is absent (the shared audio folder sits beside the repo)")
    with index.open(newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            text = row["transcript"]
            if text and not text.startswith("LEFT:") and float(row["duration_seconds"]) >= CLIP_S:
                audio = decode_audio((AUDIO_DIR / row["relpath"]).read_bytes()).slice(0.0, CLIP_S)
                buffer = io.BytesIO()
                with wave.open(buffer, "wb") as out:
                    out.setnchannels(1)
                    out.setsampwidth(2)
                    out.setframerate(16_000)
                    out.writeframes(float_to_pcm16(audio.samples))
                return buffer.getvalue()
    sys.exit("auth_overhead: no English clip of at least 1 s in INDEX.tsv")


def earshot_env(database_url: str) -> dict[str, str]:
    """One engine worker per server, so the client and the database keep a core."""
    env = {key: value for key, value in os.environ.items() if key != "EARSHOT_CONFIG"}
    env.update(EARSHOT_DATABASE_URL=database_url, EARSHOT_ENGINE_WORKERS="1", EARSHOT_HOST="127.0.0.1")
    env.setdefault("EARSHOT_LOG_LEVEL", "warning")
    return env


def earshot_cli(database_url: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "earshot", *args],
        cwd=REPO,
        env=earshot_env(database_url),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchFailed(f"`earshot {' '.join(args)}` exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def create_key(database_url: str, mode: str) -> str | None:
    if mode == "off":
        return None
    credits = ["--credits-seconds", str(CREDIT_SECONDS)] if mode == "key+credits" else []
    created = json.loads(earshot_cli(database_url, "keys", "create", "--name", "bench", "--json", *credits))
    key: str = created["key"]
    return key


@contextlib.contextmanager
def servers_for(backend: str, postgres_url: str, log: io.BufferedRandom) -> Iterator[list[Server]]:
    """A running server per mode, each on its own fresh database."""
    with contextlib.ExitStack() as stack:
        servers = []
        for mode in MODES:
            database_url = stack.enter_context(fresh_database(backend, postgres_url))
            key = create_key(database_url, mode)
            base_url, process = stack.enter_context(earshot_server(earshot_env(database_url), log))
            servers.append(Server(mode, base_url, process, database_url, key))
        yield servers


async def post(client: httpx.AsyncClient, clip: bytes) -> None:
    """One transcription request the way an OpenAI SDK sends it; BenchFailed unless it answers 200."""
    try:
        response = await client.post(
            "/v1/audio/transcriptions",
            files={"file": ("clip.wav", clip, "audio/wav")},
            data={"model": "whisper-1"},
        )
    except httpx.TransportError as e:
        raise BenchFailed(f"POST: {type(e).__name__}: {e}") from e
    if response.status_code != 200:
        raise BenchFailed(f"POST: HTTP {response.status_code}: {response.text}")


def client_for(server: Server) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {server.key}"} if server.key else {}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=60, limits=limits)


async def warm_up(server: Server, clip: bytes) -> None:
    """Wait for /readyz, then a few requests so caches and pools are warm."""
    async with client_for(server) as client:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if server.process.poll() is not None:
                raise BenchFailed(f"the {server.mode} server exited with {server.process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise BenchFailed(f"the {server.mode} server was not ready within {READY_TIMEOUT_S:g} s")
            await asyncio.sleep(0.1)
        for _ in range(WARMUP_REQUESTS):
            await post(client, clip)
    server.sent += WARMUP_REQUESTS


async def measure(server: Server, clip: bytes, clients: int, window_s: float, tally: Tally) -> None:
    """`clients` keep-alive clients loading one server for `window_s`; adds to the tally."""
    async with contextlib.AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(client_for(server)) for _ in range(clients)]
        deadline = time.perf_counter() + window_s
        done = 0

        async def run(client: httpx.AsyncClient) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await post(client, clip)
                tally.latencies_ms.append((time.perf_counter() - started) * 1000)
                done += 1

        gateway = psutil.Process(server.process.pid)
        workers = gateway.children(recursive=True)
        gateway_before, engine_before = _cpu_s([gateway]), _cpu_s(workers)
        started = time.perf_counter()
        await asyncio.gather(*(run(client) for client in sessions))
        wall_s = time.perf_counter() - started
    tally.gateway_cpu_s += _cpu_s([gateway]) - gateway_before
    tally.engine_cpu_s += _cpu_s(workers) - engine_before
    tally.requests += done
    tally.wall_s += wall_s
    tally.window_rates.append(done / wall_s)
    server.sent += done


def _cpu_s(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds of these processes."""
    return sum(sum(process.cpu_times()[:2]) for process in processes)


def check_records(server: Server) -> None:
    """Exactly one usage record per request sent, and (with credits) exactly that much credit debited."""
    rows = json.loads(earshot_cli(server.database_url, "usage", "--group-by", "key", "--json"))
    recorded = sum(int(row["requests"]) for row in rows)
    if recorded != server.sent:
        raise BenchFailed(f"{server.mode}: {recorded} usage records for {server.sent} requests")
    if server.mode == "key+credits":
        [key] = json.loads(earshot_cli(server.database_url, "keys", "list", "--json"))
        debited = CREDIT_SECONDS - float(key["credits_seconds"])
        if not math.isclose(debited, server.sent * CLIP_S, abs_tol=0.001):
            raise BenchFailed(f"{debited:.3f} credit seconds debited for {server.sent} requests")


def run_backend(backend: str, args: argparse.Namespace, clip: bytes) -> dict[tuple[int, str], Tally]:
    """Every client count and round on one backend, modes interleaved; then the records are checked."""
    tallies: dict[tuple[int, str], Tally] = {}
    with tempfile.TemporaryFile() as log:
        try:
            with servers_for(backend, args.postgres_url, log) as servers:
                for server in servers:
                    asyncio.run(warm_up(server, clip))
                for clients in args.clients:
                    for mode in MODES:
                        tallies[(clients, mode)] = Tally()
                    for round_no in range(args.rounds):
                        order = servers if round_no % 2 == 0 else servers[::-1]
                        for server in order:
                            tally = tallies[(clients, server.mode)]
                            asyncio.run(measure(server, clip, clients, args.window, tally))
                    rates = "  ".join(f"{m} {tallies[(clients, m)].rate:.2f}" for m in MODES)
                    print(f"  {backend} x{clients}: {rates} req/s", file=sys.stderr, flush=True)
                for server in servers:
                    check_records(server)
        except BenchFailed as e:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-3000:]
            raise BenchFailed(f"{backend}: {e}\n--- server logs (tail) ---\n{tail}") from e
    return tallies


def overhead_pct(tallies: dict[tuple[int, str], Tally], clients: int, mode: str) -> float:
    """Median over rounds of how much slower the mode ran than "off" in the same round, in percent."""
    baseline = tallies[(clients, "off")].window_rates
    rates = tallies[(clients, mode)].window_rates
    return statistics.median((off - rate) / off * 100 for off, rate in zip(baseline, rates, strict=True))


def cpu_overhead_pct(tallies: dict[tuple[int, str], Tally], clients: int, mode: str) -> float:
    """The gateway CPU the mode adds per request, as a share of a whole "off" request's CPU, in percent."""
    off, this = tallies[(clients, "off")], tallies[(clients, mode)]
    off_total_ms = (off.gateway_cpu_s + off.engine_cpu_s) * 1000 / off.requests
    return (this.gateway_cpu_ms - off.gateway_cpu_ms) / off_total_ms * 100


def print_report(results: dict[str, dict[tuple[int, str], Tally]]) -> None:
    header = (
        "backend",
        "clients",
        "mode",
        "requests",
        "req/s",
        "p50 ms",
        "p95 ms",
        "gw cpu ms/req",
        "engine cpu ms/req",
        "req/s overhead %",
        "cpu overhead %",
    )
    rows = [header]
    worst: dict[str, tuple[float, str]] = {}
    for backend, tallies in results.items():
        for (clients, mode), tally in tallies.items():
            overheads = (
                None
                if mode == "off"
                else (overhead_pct(tallies, clients, mode), cpu_overhead_pct(tallies, clients, mode))
            )
            if overheads is not None and backend == "postgresql":
                for name, value in zip(("req/s", "cpu"), overheads, strict=True):
                    if name not in worst or value > worst[name][0]:
                        worst[name] = (value, f"{mode}, {clients} client(s)")
            rows.append(
                (
                    backend,
                    str(clients),
                    mode,
                    str(tally.requests),
                    f"{tally.rate:.2f}",
                    f"{tally.percentile_ms(0.5):.0f}",
                    f"{tally.percentile_ms(0.95):.0f}",
                    f"{tally.gateway_cpu_ms:.1f}",
                    f"{tally.engine_cpu_s * 1000 / max(tally.requests, 1):.0f}",
                    "-" if overheads is None else f"{overheads[0]:+.1f}",
                    "-" if overheads is None else f"{overheads[1]:+.1f}",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    for name, (value, where) in worst.items():
        verdict = "within" if value <= TARGET_OVERHEAD_PCT else "OVER"
        print(f"PostgreSQL: worst {name} overhead {value:+.1f} % ({where}), {verdict} the ≤ 10 % target")
    print(
        "(req/s follows the engine's CPU per request, which swings on a shared machine; "
        "cpu overhead is the gateway CPU auth adds per request over a whole request's CPU)"
    )


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=5.0, help="seconds per measured window")
    parser.add_argument("--rounds", type=int, default=6, help="windows per mode and client count")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4], help="concurrent client counts")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="admin database for fresh ones")
    args = parser.parse_args()
    if args.window <= 0 or args.rounds < 1 or min(args.clients) < 1:
        parser.error("--window, --rounds and --clients must be positive")
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    clip = load_clip()
    busy = psutil.cpu_percent(interval=1.0) / 100 * (psutil.cpu_count() or 1)
    print(
        f"{args.rounds} windows of {args.window:g} s per mode; {busy:.2f} cores busy before", file=sys.stderr
    )
    results: dict[str, dict[tuple[int, str], Tally]] = {}
    try:
        for backend in args.backends:
            results[backend] = run_backend(backend, args, clip)
    except BenchFailed as e:
        sys.exit(f"auth_overhead: {e}")
    except KeyboardInterrupt:
        sys.exit("\nauth_overhead: interrupted; servers stopped and databases dropped")
    print_report(results)


if __name__ == "__main__":
    main()
