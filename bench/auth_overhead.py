"""Auth overhead benchmark: requests/s of a 1 s transcription with auth off, with a key, and with credits.

Run as `.venv/bin/python bench/auth_overhead.py [--seconds S] [--clients 1 4] [--backends sqlite postgresql]`.
For each backend, client count and round it starts a fresh database and a fresh `earshot serve` per mode,
in the order off, key, key+credits, so slow drift of the machine does not favour one mode:

  off          no key in the database: requests are anonymous (a usage record is still written)
  key          one key with unlimited credit: every request authenticates with it
  key+credits  one key with a credit balance: every request debits credit with its usage record

It prints a table and a one-line verdict for PostgreSQL (overhead ≤ 10 % of "off"); it never asserts.
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
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import httpx
import numpy as np
import psutil
from serving import earshot_server, ignoring_interrupts

REPO = Path(__file__).resolve().parents[1]
AUDIO_DIR = REPO.parent / "shared" / "audio"
MODES = ("off", "key", "key+credits")
BACKENDS = ("sqlite", "postgresql")
DEFAULT_CLIENTS = (1, 4)
DEFAULT_SECONDS = 15.0
WARMUP_REQUESTS = 10
CLIP_S = 1.0
SAMPLE_RATE_HZ = 16_000
CREDIT_SECONDS = 1_000_000
TARGET_OVERHEAD_PCT = 10.0
READY_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 60.0
SERVER_LOG_TAIL_CHARS = 4000
BACKGROUND_SAMPLE_S = 1.0
DEFAULT_POSTGRES_URL = os.environ.get(
    "EARSHOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
COLUMNS = (
    "backend",
    "mode",
    "clients",
    "requests",
    "req/s",
    "p50 ms",
    "p95 ms",
    "overhead %",
    "gw cpu ms/req",
    "engine cpu ms/req",
    "busy cores",
)


@dataclass(frozen=True, slots=True)
class Upload:
    """The clip every request uploads: WAV bytes and where they came from."""

    name: str
    data: bytes
    source: str


@dataclass(slots=True)
class Result:
    """One measured window of one mode on one backend with some number of concurrent clients."""

    backend: str
    mode: str
    clients: int
    requests: int = 0
    wall_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    machine_cores: list[float] = field(default_factory=list)
    gateway_cpu_s: float = 0.0
    engine_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        """Completed requests per wall second."""
        return self.requests / self.wall_s if self.wall_s else 0.0

    @property
    def gateway_cpu_ms(self) -> float:
        """CPU milliseconds the server process (HTTP, auth, metering, DB client) spent per request."""
        return self.gateway_cpu_s * 1000 / self.requests if self.requests else math.nan

    @property
    def engine_cpu_ms(self) -> float:
        """CPU milliseconds the server's child processes (engine workers) spent per request."""
        return self.engine_cpu_s * 1000 / self.requests if self.requests else math.nan

    def percentile(self, q: float) -> float:
        """Latency at quantile q (0..1), nearest-rank, in milliseconds."""
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class BenchFailed(RuntimeError):
    """A server, database or request failed; the message says which."""


# --- the clip ---------------------------------------------------------------------------------------------


def load_upload() -> Upload:
    """The first second of the first English clip in ../shared/audio as 16 kHz PCM16 WAV, else a tone."""
    index = AUDIO_DIR / "INDEX.tsv"
    if index.is_file():
        from earshot.audio.decode import decode_audio

        with index.open(newline="") as f:
            rows = [row for row in csv.DictReader(f, delimiter="\t") if (row.get("transcript") or "").strip()]
        for row in rows:
            if row["transcript"].startswith("LEFT:") or float(row["duration_seconds"] or 0) < CLIP_S:
                continue
            path = AUDIO_DIR / row["relpath"]
            audio = decode_audio(path.read_bytes())
            samples = audio.samples[: int(CLIP_S * SAMPLE_RATE_HZ)]
            if len(samples) == int(CLIP_S * SAMPLE_RATE_HZ):
                return Upload("clip.wav", wav_bytes(samples), f"first {CLIP_S:g} s of {row['relpath']}")
    print(f"auth_overhead: no usable clip under {AUDIO_DIR}; using a synthetic tone", file=sys.stderr)
    t = np.arange(int(CLIP_S * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    tone = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return Upload("tone.wav", wav_bytes(tone), f"{CLIP_S:g} s synthetic 220 Hz tone")


def wav_bytes(samples: np.ndarray) -> bytes:
    """Mono float samples in [-1, 1] as a 16 kHz PCM16 WAV file."""
    pcm = np.clip(np.rint(samples * 32767.0), -32768, 32767).astype("<i2").tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE_HZ)
        out.writeframes(pcm)
    return buffer.getvalue()


# --- databases --------------------------------------------------------------------------------------------


def postgres_admin(admin_url: str) -> tuple[str, str]:
    """(libpq URL of the admin database, server part to build sibling database URLs)."""
    url = admin_url.replace("postgresql+asyncpg://", "postgresql://")
    return url, url.rsplit("/", 1)[0]


def create_postgres_database(admin_url: str) -> str:
    """A fresh, empty PostgreSQL database; returns its earshot (asyncpg) URL."""
    import asyncpg

    libpq_url, base = postgres_admin(admin_url)
    name = f"earshot_bench_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(libpq_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    try:
        asyncio.run(create())
    except (OSError, asyncpg.PostgresError) as e:
        raise BenchFailed(f"PostgreSQL at {libpq_url} is unreachable: {e}") from e
    return f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"


def drop_postgres_database(admin_url: str, url: str) -> None:
    """Drop a database made by create_postgres_database, closing its connections."""
    import asyncpg

    libpq_url, _ = postgres_admin(admin_url)
    name = url.rsplit("/", 1)[1]

    async def drop() -> None:
        conn = await asyncpg.connect(libpq_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


@contextlib.contextmanager
def fresh_database(backend: str, admin_url: str) -> Iterator[str]:
    """The URL of a new, empty earshot database on `backend`, removed afterwards (even on Ctrl-C)."""
    if backend == "sqlite":
        directory = tempfile.mkdtemp(prefix="earshot-bench-")
        try:
            yield f"sqlite+aiosqlite:///{Path(directory) / 'earshot.db'}"
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    url = create_postgres_database(admin_url)
    try:
        yield url
    finally:
        with ignoring_interrupts():
            try:
                drop_postgres_database(admin_url, url)
            except Exception as e:  # report the leftover database and keep cleaning up the rest
                print(f"auth_overhead: could not drop {url}: {e}", file=sys.stderr)


# --- the server and the CLI -------------------------------------------------------------------------------


def server_env(database_url: str) -> dict[str, str]:
    """The environment of every earshot process: this one's, on the given database, one engine worker."""
    env = {key: value for key, value in os.environ.items() if key != "EARSHOT_CONFIG"}
    env["EARSHOT_DATABASE_URL"] = database_url
    env["EARSHOT_ENGINE_WORKERS"] = "1"
    env["EARSHOT_HOST"] = "127.0.0.1"
    env.setdefault("EARSHOT_LOG_LEVEL", "warning")
    return env


def earshot_cli(database_url: str, *args: str) -> str:
    """Run `earshot ARGS` on the database and return its stdout."""
    command = [sys.executable, "-m", "earshot", *args]
    done = subprocess.run(
        command, cwd=REPO, env=server_env(database_url), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BenchFailed(f"`earshot {' '.join(args)}` exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def create_key(database_url: str, mode: str) -> str | None:
    """The plaintext key the mode's requests send (None for "off", which creates no key)."""
    if mode == "off":
        return None
    credits = ["--credits-seconds", str(CREDIT_SECONDS)] if mode == "key+credits" else []
    created = json.loads(earshot_cli(database_url, "keys", "create", "--name", "bench", "--json", *credits))
    key: str = created["key"]
    return key


def check_database(database_url: str, mode: str, sent: int, audio_s: float) -> str | None:
    """A problem with the usage records or credit the run left behind, or None when all add up."""
    rows = json.loads(earshot_cli(database_url, "usage", "--group-by", "key", "--json"))
    recorded = sum(int(row["requests"]) for row in rows)
    keyed = [row for row in rows if row["key"] is not None]
    if recorded != sent:
        return f"{recorded} usage records for {sent} requests"
    if (mode == "off") != (not keyed):
        return f"usage records by key {[row['key'] for row in rows]} do not match mode {mode!r}"
    if mode == "key+credits":
        keys = json.loads(earshot_cli(database_url, "keys", "list", "--json"))
        debited = CREDIT_SECONDS - float(keys[0]["credits_seconds"])
        if not math.isclose(debited, sent * audio_s, abs_tol=0.01 * sent + 0.01):
            return f"{debited:.3f} credit seconds debited for {sent} requests of {audio_s:g} s"
    return None


def running_server(
    database_url: str, log: IO[bytes]
) -> contextlib.AbstractContextManager[tuple[str, subprocess.Popen[bytes]]]:
    """`earshot serve` on the database; stopped on exit even if Ctrl-C is pressed again."""
    return earshot_server(server_env(database_url), log)


def raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into KeyboardInterrupt so the same cleanup runs."""
    raise KeyboardInterrupt


def tree_cpu_s(root: psutil.Process) -> dict[int, float]:
    """User+system CPU seconds of `root` and each of its live descendants, by pid."""
    times: dict[int, float] = {}
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            cpu = proc.cpu_times()
            times[proc.pid] = cpu.user + cpu.system
    return times


# --- clients ----------------------------------------------------------------------------------------------


async def wait_ready(client: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    """Poll GET /readyz until it answers 200, failing if the server exits or takes too long."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchFailed(f"the server exited with {process.returncode} before it was ready")
        with contextlib.suppress(httpx.TransportError):
            if (await client.get("/readyz")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise BenchFailed(f"GET /readyz did not answer 200 within {READY_TIMEOUT_S:g} s")


async def post(client: httpx.AsyncClient, upload: Upload) -> None:
    """One transcription request the way an OpenAI SDK sends it; BenchFailed unless it answers 200."""
    try:
        response = await client.post(
            "/v1/audio/transcriptions",
            files={"file": (upload.name, upload.data, "audio/wav")},
            data={"model": "whisper-1", "response_format": "json"},
        )
    except httpx.TransportError as e:
        raise BenchFailed(f"POST: {type(e).__name__}: {e}") from e
    if response.status_code != 200:
        raise BenchFailed(f"POST: HTTP {response.status_code}: {response.text}")


async def bench_one(
    base_url: str,
    process: subprocess.Popen[bytes],
    key: str | None,
    upload: Upload,
    clients: int,
    seconds: float,
    result: Result,
) -> int:
    """Warm up, then run `clients` keep-alive clients for `seconds`; returns the requests sent in all."""
    measured_before = result.requests
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with contextlib.AsyncExitStack() as stack:
        sessions = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_S, limits=limits
                )
            )
            for _ in range(clients)
        ]
        await wait_ready(sessions[0], process)
        for i in range(WARMUP_REQUESTS):
            await post(sessions[i % clients], upload)

        deadline = time.perf_counter() + seconds

        async def run_client(client: httpx.AsyncClient) -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await post(client, upload)
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
                result.requests += 1

        server = psutil.Process(process.pid)
        cpu_before = tree_cpu_s(server)
        psutil.cpu_percent(interval=None)
        started = time.perf_counter()
        await asyncio.gather(*(run_client(client) for client in sessions))
        result.wall_s += time.perf_counter() - started
        cpu_after = tree_cpu_s(server)
        used = {pid: cpu - cpu_before.get(pid, 0.0) for pid, cpu in cpu_after.items()}
        result.gateway_cpu_s += used.pop(process.pid, 0.0)
        result.engine_cpu_s += sum(used.values())
        result.machine_cores.append(psutil.cpu_percent(interval=None) / 100 * (psutil.cpu_count() or 1))
    return WARMUP_REQUESTS + result.requests - measured_before


def run_mode(
    backend: str, mode: str, clients: int, args: argparse.Namespace, upload: Upload, result: Result
) -> None:
    """One fresh database and server for one mode, measured; checks the usage records it left."""
    with fresh_database(backend, args.postgres_url) as database_url, tempfile.TemporaryFile() as log:
        key = create_key(database_url, mode)
        try:
            with running_server(database_url, log) as (base_url, process):
                sent = asyncio.run(bench_one(base_url, process, key, upload, clients, args.seconds, result))
        except BenchFailed as e:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-SERVER_LOG_TAIL_CHARS:]
            raise BenchFailed(f"{backend} {mode} x{clients}: {e}\n--- server log (tail) ---\n{tail}") from e
        problem = check_database(database_url, mode, sent, CLIP_S)
        if problem is not None:
            raise BenchFailed(f"{backend} {mode} x{clients}: {problem}")


# --- report -----------------------------------------------------------------------------------------------


def overhead_pct(result: Result, baseline: Result | None) -> float | None:
    """How much lower the throughput is than the "off" run of the same backend and clients, in percent."""
    if baseline is None or result.mode == "off" or not baseline.rate:
        return None
    return (baseline.rate - result.rate) / baseline.rate * 100


def print_table(results: Sequence[Result]) -> None:
    """The results as an aligned text table."""
    baselines = {(r.backend, r.clients): r for r in results if r.mode == "off"}
    rows = [COLUMNS]
    for r in results:
        overhead = overhead_pct(r, baselines.get((r.backend, r.clients)))
        rows.append(
            (
                r.backend,
                r.mode,
                str(r.clients),
                str(r.requests),
                f"{r.rate:.1f}",
                f"{r.percentile(0.50):.1f}",
                f"{r.percentile(0.95):.1f}",
                "-" if overhead is None else f"{overhead:+.1f}",
                f"{r.gateway_cpu_ms:.1f}",
                f"{r.engine_cpu_ms:.1f}",
                f"{statistics.fmean(r.machine_cores):.2f}" if r.machine_cores else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


def print_verdict(results: Sequence[Result]) -> None:
    """The largest PostgreSQL overhead over "off" and whether it is within the target."""
    baselines = {(r.backend, r.clients): r for r in results if r.mode == "off"}
    overheads = [
        (pct, r)
        for r in results
        if r.backend == "postgresql"
        and (pct := overhead_pct(r, baselines.get((r.backend, r.clients)))) is not None
    ]
    if not overheads:
        return
    worst, where = max(overheads, key=lambda item: item[0])
    verdict = "within" if worst <= TARGET_OVERHEAD_PCT else "OVER"
    print(
        f"\nPostgreSQL: max auth overhead {worst:+.1f} % ({where.mode}, {where.clients} clients), "
        f"{verdict} the ≤ {TARGET_OVERHEAD_PCT:g} % target"
    )


def main() -> None:
    """Parse arguments, run every backend, client count and mode, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="measured seconds per mode")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=list(DEFAULT_CLIENTS), help="concurrent client counts"
    )
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS), help="databases")
    parser.add_argument(
        "--rounds", type=int, default=1, help="times to repeat the off,key,key+credits cycle (pooled)"
    )
    parser.add_argument(
        "--postgres-url", default=DEFAULT_POSTGRES_URL, help="admin database to create fresh databases from"
    )
    args = parser.parse_args()
    if args.seconds <= 0 or args.rounds < 1 or min(args.clients) < 1:
        parser.error("--seconds, --rounds and --clients must be positive")
    signal.signal(signal.SIGTERM, raise_on_sigterm)

    upload = load_upload()
    idle_cores = psutil.cpu_percent(interval=BACKGROUND_SAMPLE_S) / 100 * (psutil.cpu_count() or 1)
    print(
        f"clip: {upload.source} ({len(upload.data)} bytes); "
        f"{args.seconds:g} s per mode x {args.rounds} round(s); "
        f"{psutil.cpu_count()} CPUs, {idle_cores:.2f} busy before the run",
        file=sys.stderr,
        flush=True,
    )
    results: list[Result] = []
    interrupted = False
    try:
        for backend in args.backends:
            for clients in args.clients:
                row = {mode: Result(backend, mode, clients) for mode in MODES}
                results.extend(row.values())
                for round_no in range(1, args.rounds + 1):
                    for mode in MODES:
                        requests, wall_s = row[mode].requests, row[mode].wall_s
                        run_mode(backend, mode, clients, args, upload, row[mode])
                        rate = (row[mode].requests - requests) / (row[mode].wall_s - wall_s)
                        print(
                            f"  round {round_no}: {backend} {mode} x{clients}: {rate:.1f} req/s",
                            file=sys.stderr,
                            flush=True,
                        )
    except BenchFailed as e:
        sys.exit(f"auth_overhead: {e}")
    except KeyboardInterrupt:
        print("\nauth_overhead: interrupted; servers stopped and databases dropped", file=sys.stderr)
        interrupted = True
        results = [r for r in results if r.wall_s > 0]
    print(f"\nCPU busy before the run (other processes): {idle_cores:.2f} of {psutil.cpu_count()} cores")
    print_table(results)
    print_verdict(results)
    if interrupted:
        sys.exit(130)


if __name__ == "__main__":
    main()
