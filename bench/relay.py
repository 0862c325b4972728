"""One-shot relay overhead: requests through earshot to a fake OpenAI upstream vs calling the fake directly.

Run as `.venv/bin/python bench/relay.py [--window S] [--rounds N] [--clients 1 16 64] [--profile]`.
The fake OpenAI (tests/fakes/openai.py) runs in its own process, so it shares no GIL with the bench's
clients; earshot runs as `earshot serve` with a catalog whose one model points at the fake. Each client
count is measured in short windows that alternate direct, earshot, earshot, direct, ... so a machine whose
speed drifts (other tenants, a shared core) slows both alike. The added latency is earshot's p50 (p99) minus
the direct p50 (p99) over the same windows. Each request is a 1 s, 16 kHz PCM16 WAV, as the OpenAI SDK sends
it. With `--profile`, earshot's event loop thread runs under cProfile and the functions with the most time
of their own are printed after the table. Prints a table; never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from serving import server_process

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.provider_io import wav_bytes

TARGET_ADDED_P50_MS = 1.0
FAKE_KEY = "sk-fake-openai-key-5b2e9c"  # tests.fakes.openai.OPENAI_KEY
READY_TIMEOUT_S = 60.0
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
import cProfile, signal, sys
from earshot.cli import app
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
profile = cProfile.Profile()
sys.argv[0] = "earshot"
try:
    profile.runcall(app)
finally:
    profile.dump_stats({path!r})
"""


class BenchFailed(RuntimeError):
    """A server or request failed; the message says which."""


@dataclass(slots=True)
class Tally:
    """Requests and latencies of one target at one client count, over all its windows."""

    requests: int = 0
    wall_s: float = 0.0
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


@contextlib.contextmanager
def fake_upstream(log: io.BufferedRandom) -> Iterator[str]:
    """The fake OpenAI in its own process; its base URL."""
    with server_process(lambda port: [sys.executable, "-c", FAKE_SERVER.format(port=port)], log) as (url, _):
        yield url


def earshot_env(catalog: Path, database_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EARSHOT_")}
    env.update(
        EARSHOT_CONFIG=str(catalog),
        EARSHOT_DATABASE_URL=database_url,
        EARSHOT_BENCH_FAKE_KEY=FAKE_KEY,
        EARSHOT_ENGINE_WORKERS="1",
        EARSHOT_LOG_LEVEL="warning",
    )
    return env


async def wait_ready(url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url)).status_code in (200, 404, 405):
                    return
            await asyncio.sleep(0.1)
    raise BenchFailed(f"{url} did not answer within {READY_TIMEOUT_S:g} s")


async def post(client: httpx.AsyncClient, clip: bytes, model: str) -> None:
    """One transcription request the way the OpenAI SDK sends it; BenchFailed unless it answers 200."""
    try:
        response = await client.post(
            "/v1/audio/transcriptions",
            files={"file": ("clip.wav", clip, "audio/wav")},
            data={"model": model},
        )
    except httpx.TransportError as e:
        raise BenchFailed(f"POST: {type(e).__name__}: {e}") from e
    if response.status_code != 200:
        raise BenchFailed(f"POST: HTTP {response.status_code}: {response.text[:300]}")


def client_for(base_url: str) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    headers = {"Authorization": f"Bearer {FAKE_KEY}"}
    return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60, limits=limits)


async def measure(
    base_url: str, model: str, clip: bytes, clients: int, window_s: float, tally: Tally
) -> None:
    """Keep `clients` requests in flight for `window_s`; add what finished to the tally."""
    deadline = math.inf

    async def run(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await post(client, clip, model)
            tally.latencies_ms.append((time.perf_counter() - started) * 1000)
            tally.requests += 1

    pool = [client_for(base_url) for _ in range(clients)]
    try:
        # Connections open before the clock starts.
        await asyncio.gather(*(post(client, clip, model) for client in pool))
        started = time.perf_counter()
        deadline = started + window_s
        await asyncio.gather(*(run(client) for client in pool))
        tally.wall_s += time.perf_counter() - started
    finally:
        await asyncio.gather(*(client.aclose() for client in pool))


async def bench(args: argparse.Namespace, fake_url: str, earshot_url: str) -> dict[tuple[int, str], Tally]:
    clip = one_second_wav()
    await wait_ready(f"{fake_url}/v1/audio/transcriptions")
    await wait_ready(f"{earshot_url}/readyz")
    async with client_for(earshot_url) as client:
        for _ in range(WARMUP_REQUESTS):
            await post(client, clip, "relayed")
            await post(client, clip, "gateway-only")
    targets = {
        "direct": (fake_url, "whisper-1"),
        "earshot": (earshot_url, "relayed"),
        "earshot, null engine": (earshot_url, "gateway-only"),
    }
    tallies = {(clients, target): Tally() for clients in args.clients for target in targets}
    for clients in args.clients:
        for round_index in range(args.rounds):
            order = list(targets) if round_index % 2 == 0 else list(reversed(targets))
            for target in order:
                url, model = targets[target]
                await measure(url, model, clip, clients, args.window, tallies[(clients, target)])
    return tallies


def print_report(tallies: dict[tuple[int, str], Tally], clients_counts: list[int]) -> None:
    print()
    print("One-shot relay overhead: 1 s WAV; earshot -> fake OpenAI (own process) vs the fake directly.")
    print("'earshot, null engine' is earshot with no upstream at all: what the gateway costs by itself.")
    header = (
        f"{'clients':>7}  {'target':<20}  {'req/s':>8}  {'p50':>9}  {'p99':>9}"
        f"  {'added p50':>10}  {'added p99':>10}"
    )
    print(header)
    print("-" * len(header))
    verdict = None
    for clients in clients_counts:
        direct = tallies[(clients, "direct")]
        for (count, target), tally in tallies.items():
            if count != clients:
                continue
            p50, p99 = tally.percentile_ms(0.5), tally.percentile_ms(0.99)
            added = ""
            if target != "direct":
                added_p50 = p50 - direct.percentile_ms(0.5)
                added = f"  {added_p50:>8.2f}ms  {p99 - direct.percentile_ms(0.99):>8.2f}ms"
                if clients == 1 and target == "earshot":
                    verdict = added_p50
            print(f"{clients:>7}  {target:<20}  {tally.rate:>8.1f}  {p50:>7.2f}ms  {p99:>7.2f}ms{added}")
    print()
    if verdict is not None:
        met = "meets" if verdict <= TARGET_ADDED_P50_MS else "misses"
        target_ms = f"{TARGET_ADDED_P50_MS:g} ms"
        print(f"1 client: earshot adds {verdict:.2f} ms at p50; {met} the {target_ms} target.")
    measured = sum(t.requests for t in tallies.values())
    print(f"requests measured: {measured} (machine: {os.cpu_count()} cores)")


@contextlib.contextmanager
def earshot_process(env: dict[str, str], log: io.BufferedRandom, profile_to: Path | None) -> Iterator[str]:
    """`earshot serve` on a free port, under cProfile when `profile_to` is given; its base URL."""

    def command(port: int) -> list[str]:
        serve = ["serve", "--port", str(port)]
        if profile_to is None:
            return [sys.executable, "-m", "earshot", *serve]
        return [sys.executable, "-c", PROFILED_SERVER.format(path=str(profile_to)), *serve]

    with server_process(command, log, env) as (url, _):
        yield url


def print_profile(path: Path) -> None:
    import pstats

    if not path.exists():
        print(f"\nno profile was written to {path}")
        return
    print("\nearshot's event loop under cProfile (whole run), top 25 by own time:")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(25)
    print("top 25 by cumulative time:")
    stats.sort_stats("cumulative").print_stats(25)


def stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--window", type=float, default=2.0, help="seconds per measured window")
    parser.add_argument("--rounds", type=int, default=4, help="windows per target and client count")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64], help="concurrent clients")
    parser.add_argument("--profile", action="store_true", help="run earshot under cProfile and print the top")
    parser.add_argument(
        "--database-dir", type=Path, help="where earshot's SQLite file goes (default: a temporary directory)"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    with (
        tempfile.TemporaryDirectory(prefix="earshot-relay-bench-") as tmp,
        open(Path(tmp) / "servers.log", "w+b") as log,
    ):
        profile_to = Path(tmp) / "earshot.prof" if args.profile else None
        try:
            with fake_upstream(log) as fake_url:
                catalog = Path(tmp) / "catalog.yaml"
                catalog.write_text(CATALOG.format(base_url=fake_url))
                database = (args.database_dir or Path(tmp)) / f"earshot-relay-bench-{os.getpid()}.db"
                env = earshot_env(catalog, f"sqlite+aiosqlite:///{database}")
                try:
                    with earshot_process(env, log, profile_to) as earshot_url:
                        tallies = asyncio.run(bench(args, fake_url, earshot_url))
                finally:
                    database.unlink(missing_ok=True)
        except BenchFailed as e:
            log.seek(0)
            sys.exit(f"relay bench failed: {e}\n{log.read().decode(errors='replace')[-3000:]}")
        print_report(tallies, args.clients)
        if profile_to is not None:
            print_profile(profile_to)


if __name__ == "__main__":
    main()
