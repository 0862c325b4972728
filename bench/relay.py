"""One-shot relay overhead: earshot and LiteLLM's proxy relaying to one fake OpenAI, vs calling it directly.

Run as `.venv/bin/python bench/relay.py [--window S] [--rounds N] [--clients 1 16 64] [--no-litellm]
[--earshot-workers N] [--profile]`. Prints tables; never asserts.

What runs, all on this machine, in one run:

- The fake OpenAI (tests/fakes/openai.py) in its own process: `direct` calls it with no gateway in between.
- earshot as a user deploys it on 2 cores: `earshot serve --workers 2` (one gateway process per core, the
  default with Redis), so the bench starts a throwaway `redis-server`; SQLite for the store; one API key (no
  credit limit), so every request is authenticated and leaves its usage record. Its catalog's `relayed`
  model points at the fake; `earshot, null engine` is a model with no upstream: what the gateway costs alone.
- LiteLLM's proxy, installed by the bench into a venv of its own (bench/litellm_proxy.py) and started with
  its own CLI and the same 2 workers (`litellm --config ... --num_workers 2`), one `openai/whisper-1` model on
  the fake, authenticated with a master key. It has no database (LiteLLM's needs PostgreSQL and Prisma), so
  it records no spend per request where earshot writes a usage record. If it cannot be installed or
  started, its column is skipped and the reason printed.

The clients are this process: a lean HTTP/1.1 client on uvloop (bench/lean_client.py) that sends a prebuilt
upload (a 1 s, 16 kHz PCM16 WAV and `model`, as the OpenAI SDK sends them) on keep-alive connections, about
0.1 ms of CPU a request, so the servers get the cores. Each client count is measured in short windows that
take turns (direct, earshot, ..., then reversed), so a machine whose speed drifts slows all alike. Added
latency is a target's p50 minus the direct p50 over the same windows; `cpu/req` is the CPU time of the
target's processes (all workers, not the fake) over its windows divided by its requests.

With `--profile`, earshot runs as one process (`--workers 1`, no Redis) under cProfile with a CPU clock
(the event loop thread's own time), and the functions with the most CPU of their own are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import litellm_proxy
import numpy as np
import psutil
from lean_client import Connection, RequestFailed, multipart_upload, run
from serving import server_process

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.provider_io import wav_bytes

TARGET_ADDED_P50_MS = 1.0
TARGET_RATIO = 2.5
FAKE_KEY = "sk-fake-openai-key-5b2e9c"  # tests.fakes.openai.OPENAI_KEY
READY_TIMEOUT_S = 60.0
LITELLM_READY_TIMEOUT_S = 240.0
WARMUP_REQUESTS = 20
CATALOG = """
models:
  relayed:
    engine: openai
    base_url: {base_url}/v1
    api_key_env: EARSHOT_BENCH_FAKE_KEY
    upstream_model: whisper-1
    options: {{language: en}}
  gateway-only:
    engine: "null"
"""
FAKE_SERVER = """
import uvicorn
from tests.fakes.openai import FakeOpenAI
uvicorn.run(FakeOpenAI("one second of audio").app, host="127.0.0.1", port={port}, log_level="warning")
"""
# uvicorn re-raises SIGTERM once it has shut down: a handler that exits lets the profile be written.
PROFILED_SERVER = """
import cProfile, signal, sys, time
from earshot.cli import app
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
profile = cProfile.Profile(time.thread_time)
sys.argv[0] = "earshot"
try:
    profile.runcall(app)
finally:
    profile.dump_stats({path!r})
"""


class BenchFailed(RuntimeError):
    """A server or request failed; the message says which."""


@dataclass(slots=True)
class Target:
    """Something to send uploads to: its URL, the model and key it is sent, and the processes it costs."""

    name: str
    url: str
    model: str
    key: str
    process: psutil.Process | None = None


@dataclass(slots=True)
class Tally:
    """Requests, latencies and server CPU of one target at one client count, over all its windows."""

    requests: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def one_second_wav() -> bytes:
    """1 s of a soft tone as a 16 kHz mono PCM16 WAV (the fake answers the same for any audio)."""
    t = np.arange(ENGINE_RATE_HZ) / ENGINE_RATE_HZ
    return wav_bytes(Audio((np.sin(2 * np.pi * 440 * t) * 0.09).astype(np.float32)))


def tree_cpu_s(process: psutil.Process | None) -> float:
    """CPU seconds used so far by a process and its children."""
    if process is None:
        return 0.0
    total = 0.0
    for each in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = each.cpu_times()
            total += times.user + times.system
    return total


def upload_for(target: Target, clip: bytes) -> bytes:
    return multipart_upload(
        target.url,
        "/v1/audio/transcriptions",
        target.key,
        {"model": target.model},
        "clip.wav",
        "audio/wav",
        clip,
    )


async def measure(target: Target, clip: bytes, clients: int, window_s: float, tally: Tally) -> None:
    """Keep `clients` requests in flight for `window_s`; add what finished to the tally."""
    request = upload_for(target, clip)
    pool = [Connection(target.url, request) for _ in range(clients)]
    deadline = math.inf

    async def client(connection: Connection) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await connection.send()
            tally.latencies_ms.append((time.perf_counter() - started) * 1000)
            tally.requests += 1

    try:
        # Connections open (and the first request is answered) before the clock starts.
        await asyncio.gather(*(connection.send() for connection in pool))
        cpu_before = tree_cpu_s(target.process)
        started = time.perf_counter()
        deadline = started + window_s
        await asyncio.gather(*(client(connection) for connection in pool))
        tally.wall_s += time.perf_counter() - started
        tally.cpu_s += tree_cpu_s(target.process) - cpu_before
    except RequestFailed as e:
        raise BenchFailed(f"{target.name}: {e}") from e
    finally:
        for connection in pool:
            await connection.close()


async def wait_ready(url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Until `url` answers HTTP at all (any status but a refused connection)."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    deadline = time.monotonic() + timeout_s
    probe = f"GET /{url.split('/', 3)[3] if url.count('/') > 2 else ''} HTTP/1.1\r\nHost: {host}\r\n\r\n"
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(probe.encode())
            status = (await asyncio.wait_for(reader.readline(), 5)).split()
            writer.close()
            if len(status) > 1 and status[1] in (b"200", b"404", b"405"):
                return
        await asyncio.sleep(0.2)
    raise BenchFailed(f"{url} did not answer within {timeout_s:g} s")


async def bench(args: argparse.Namespace, targets: list[Target]) -> dict[tuple[int, str], Tally]:
    clip = one_second_wav()
    for target in targets:
        warm = Connection(target.url, upload_for(target, clip))
        try:
            for _ in range(WARMUP_REQUESTS):
                await warm.send()
        except RequestFailed as e:
            raise BenchFailed(f"{target.name} warm-up: {e}") from e
        finally:
            await warm.close()
    tallies = {(clients, t.name): Tally() for clients in args.clients for t in targets}
    for clients in args.clients:
        for round_index in range(args.rounds):
            order = targets if round_index % 2 == 0 else list(reversed(targets))
            for target in order:
                await measure(target, clip, clients, args.window, tallies[(clients, target.name)])
    return tallies


def print_report(
    tallies: dict[tuple[int, str], Tally], clients_counts: list[int], setup: str, litellm_note: str | None
) -> None:
    print()
    print("One-shot relay: a 1 s WAV upload; earshot and LiteLLM relay it to one fake OpenAI (own process).")
    print(setup)
    if litellm_note:
        print(f"LiteLLM: {litellm_note}")
    header = (
        f"{'clients':>7}  {'target':<20}  {'req/s':>8}  {'p50':>9}  {'p99':>9}  {'added p50':>10}"
        f"  {'added p99':>10}  {'cpu/req':>9}"
    )
    print(header)
    print("-" * len(header))
    verdicts: list[str] = []
    for clients in clients_counts:
        direct = tallies[(clients, "direct")]
        for (count, name), tally in tallies.items():
            if count != clients:
                continue
            p50, p99 = tally.percentile_ms(0.5), tally.percentile_ms(0.99)
            added = f"{'':>10}  {'':>10}"
            if name != "direct":
                added_p50 = p50 - direct.percentile_ms(0.5)
                added = f"{added_p50:>8.2f}ms  {p99 - direct.percentile_ms(0.99):>8.2f}ms"
                if clients == 1 and name == "earshot":
                    met = "meets" if added_p50 <= TARGET_ADDED_P50_MS else "misses"
                    verdicts.append(
                        f"1 client: earshot adds {added_p50:.2f} ms at p50; {met} the "
                        f"{TARGET_ADDED_P50_MS:g} ms target."
                    )
            cpu = (
                f"{tally.cpu_s / tally.requests * 1000:>7.2f}ms"
                if tally.requests and name != "direct"
                else ""
            )
            rate = f"{tally.rate:>8.1f}"
            print(f"{clients:>7}  {name:<20}  {rate}  {p50:>7.2f}ms  {p99:>7.2f}ms  {added}  {cpu:>9}")
        litellm = tallies.get((clients, "LiteLLM"))
        if litellm is not None and litellm.rate:
            ratio = tallies[(clients, "earshot")].rate / litellm.rate
            line = f"{clients:>7}  earshot/LiteLLM throughput: {ratio:.2f}x"
            print(line)
            if clients == 16:
                met = "meets" if ratio >= TARGET_RATIO else "misses"
                verdicts.append(
                    f"16 clients: earshot relays {ratio:.2f}x LiteLLM's throughput; {met} the "
                    f"{TARGET_RATIO:g}x target."
                )
    print()
    for verdict in verdicts:
        print(verdict)
    measured = sum(t.requests for t in tallies.values())
    print(f"requests measured: {measured} (machine: {os.cpu_count()} cores)")


def earshot_env(catalog: Path, database_url: str, redis_url: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EARSHOT_")}
    env.update(
        EARSHOT_CONFIG=str(catalog),
        EARSHOT_DATABASE_URL=database_url,
        EARSHOT_BENCH_FAKE_KEY=FAKE_KEY,
        EARSHOT_ENGINE_WORKERS="1",
        EARSHOT_LOG_LEVEL="warning",
    )
    if redis_url:
        env["EARSHOT_REDIS_URL"] = redis_url
    return env


@contextlib.contextmanager
def redis_server(log: io.BufferedRandom) -> Iterator[str]:
    """A throwaway redis-server (no persistence) on a free port; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchFailed(
            "--earshot-workers above 1 needs redis-server on PATH (or pass --earshot-workers 1)"
        )

    def command(port: int) -> list[str]:
        return [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]

    with server_process(command, log) as (url, _):
        yield url.replace("http://", "redis://")


def create_key(env: dict[str, str]) -> str:
    """An API key with no limits, made with earshot's own CLI (which also creates the database)."""
    made = subprocess.run(
        [sys.executable, "-m", "earshot", "keys", "create", "--name", "relay-bench", "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        raise BenchFailed(f"earshot keys create failed: {made.stderr[-500:]}")
    key: str = json.loads(made.stdout)["key"]
    return key


@contextlib.contextmanager
def earshot_process(
    env: dict[str, str], log: io.BufferedRandom, workers: int, profile_to: Path | None
) -> Iterator[tuple[str, psutil.Process]]:
    """`earshot serve` on a free port (under cProfile when `profile_to` is given); its URL and process."""

    def command(port: int) -> list[str]:
        serve = ["serve", "--port", str(port), "--workers", str(workers)]
        if profile_to is None:
            return [sys.executable, "-m", "earshot", *serve]
        return [sys.executable, "-c", PROFILED_SERVER.format(path=str(profile_to)), *serve]

    with server_process(command, log, env) as (url, process):
        yield url, psutil.Process(process.pid)


@contextlib.contextmanager
def litellm_process(
    args: argparse.Namespace, fake_url: str, tmp: Path, log: io.BufferedRandom
) -> Iterator[tuple[Target | None, str | None]]:
    """LiteLLM's proxy relaying to the fake, as a Target, or None and the reason it is skipped."""
    if args.no_litellm:
        yield None, "skipped (--no-litellm)"
        return
    try:
        command = litellm_proxy.install(args.litellm_version)
    except litellm_proxy.LiteLLMUnavailable as e:
        yield None, f"skipped: {e}"
        return
    config = litellm_proxy.write_config(tmp / "litellm.yaml", fake_url, FAKE_KEY)
    start = lambda port: litellm_proxy.proxy_command(command, config, port, args.litellm_workers)  # noqa: E731
    with server_process(start, log, litellm_proxy.proxy_env()) as (url, process):
        try:
            run(wait_ready(f"{url}/health/liveliness", LITELLM_READY_TIMEOUT_S))
        except BenchFailed as e:
            yield None, f"skipped: the proxy did not start ({e})"
            return
        version = f"litellm {args.litellm_version}, {args.litellm_workers} workers (uvicorn)"
        yield (
            Target("LiteLLM", url, "whisper-1", litellm_proxy.MASTER_KEY, psutil.Process(process.pid)),
            version,
        )


def print_profile(path: Path) -> None:
    import pstats

    if not path.exists():
        print(f"\nno profile was written to {path}")
        return
    print("\nearshot's event loop thread under cProfile (CPU time, whole run), top 30 by own time:")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(30)


def stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--window", type=float, default=2.0, help="seconds per measured window")
    parser.add_argument("--rounds", type=int, default=4, help="windows per target and client count")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64], help="concurrent clients")
    parser.add_argument("--earshot-workers", type=int, default=2, help="earshot serve --workers (default 2)")
    parser.add_argument("--litellm-workers", type=int, default=2, help="litellm --num_workers (default 2)")
    parser.add_argument("--litellm-version", default=litellm_proxy.LITELLM_VERSION)
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM's proxy out")
    parser.add_argument("--no-null", action="store_true", help="leave out earshot's null-engine model")
    parser.add_argument("--profile", action="store_true", help="one earshot process under cProfile")
    parser.add_argument(
        "--database-dir", type=Path, help="where earshot's SQLite file goes (default: a temporary directory)"
    )
    args = parser.parse_args()
    workers = 1 if args.profile else args.earshot_workers
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    with (
        tempfile.TemporaryDirectory(prefix="earshot-relay-bench-") as tmp_name,
        open(Path(tmp_name) / "servers.log", "w+b") as log,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmp_name)
        profile_to = tmp / "earshot.prof" if args.profile else None
        try:
            fake_url, _ = stack.enter_context(
                server_process(lambda port: [sys.executable, "-c", FAKE_SERVER.format(port=port)], log)
            )
            run(wait_ready(f"{fake_url}/v1/audio/transcriptions"))
            fake = Target("direct", fake_url, "whisper-1", FAKE_KEY)
            litellm, litellm_note = stack.enter_context(litellm_process(args, fake_url, tmp, log))
            catalog = tmp / "catalog.yaml"
            catalog.write_text(CATALOG.format(base_url=fake_url))
            database = (args.database_dir or tmp) / f"earshot-relay-bench-{os.getpid()}.db"
            stack.callback(database.unlink, missing_ok=True)
            redis_url = stack.enter_context(redis_server(log)) if workers > 1 else None
            env = earshot_env(catalog, f"sqlite+aiosqlite:///{database}", redis_url)
            key = create_key(env)
            earshot_url, earshot = stack.enter_context(earshot_process(env, log, workers, profile_to))
            run(wait_ready(f"{earshot_url}/readyz"))
            targets = [fake, Target("earshot", earshot_url, "relayed", key, earshot)]
            if not args.no_null:
                targets.append(Target("earshot, null engine", earshot_url, "gateway-only", key, earshot))
            if litellm is not None:
                targets.append(litellm)
            tallies = run(bench(args, targets))
        except BenchFailed as e:
            log.seek(0)
            sys.exit(f"relay bench failed: {e}\n{log.read().decode(errors='replace')[-3000:]}")
        # The servers stop first: a profiled earshot writes its profile as it exits.
        stack.close()
        setup = (
            f"earshot: serve --workers {workers}"
            + (", Redis" if workers > 1 else "")
            + ", SQLite, one API key;"
            f" clients: lean HTTP/1.1 on {'uvloop' if _has_uvloop() else 'asyncio'} in the bench process"
        )
        print_report(tallies, args.clients, setup, litellm_note)
        if profile_to is not None:
            print_profile(profile_to)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
