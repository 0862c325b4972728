"""Relay benchmark: what relaying a /v1/realtime session through earshot adds to a provider's latency.

Run as `.venv/bin/python bench/realtime_relay.py [--sessions 1,10,50] [--turns 5]`. A fake OpenAI provider
(tests/fakes/openai.py, answering at once) runs in this process; an earshot server routes its default model to
it. Each session appends 1 s of 24 kHz PCM16 per turn in 100 ms events, commits, and waits for the transcript.
Latency = commit sent -> `.completed` received, for the same sessions sent straight to the fake ("direct"),
relayed by earshot ("relay"), and through earshot's own session and the provider's engine stream ("engine":
connected on a local model, then switched to the provider model, so earshot's turn logic drives the socket).
It prints a markdown table; it never asserts.

`--capacity [--steps 50,100,...] [--litellm-workers N]` instead finds how many relayed sessions each proxy
holds at real-time pace with p99 lag <= 50 ms, earshot beside LiteLLM's realtime relay
(bench/realtime_relay_capacity.py says how). Both run one process (earshot's default without Redis; LiteLLM's
`--num_workers 1` unless --litellm-workers says more), against the same fake provider process, with the
sessions sent from this process. LiteLLM's proxy is installed into its own venv on first use
(bench/litellm_proxy.py); if that fails its rows are left out and the reason is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import numpy as np
import psutil
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from litellm_proxy import LITELLM_VERSION, LiteLLMUnavailable, litellm_server
from realtime_relay_capacity import (
    FAKE_SCRIPT,
    HEADER,
    MAX_LAG_MS,
    RelayStep,
    Target,
    largest_held,
    row,
    run_target,
)
from realtime_step import LOG_PROBLEM, wait_ready
from serving import REPO, earshot_server, fresh_database, positive_counts, server_process

from tests.conftest import Admin
from tests.e2e.provider_server import TRANSCRIPT, ProviderSetup, provider_setup
from tests.fakes.openai import OPENAI_KEY

WS_QUERY = "/v1/realtime?intent=transcription"
CAPACITY_STEPS = (50, 100, 200, 300, 400, 600, 800, 1000, 1250, 1500, 2000)
UPSTREAM_KEY_ENV = "EARSHOT_BENCH_UPSTREAM_KEY"
EARSHOT_CATALOG = """
default_model: relayed
models:
  relayed:
    engine: openai
    base_url: {base}/v1
    api_key_env: {key_env}
    upstream_model: gpt-4o-transcribe
"""
LITELLM_CONFIG = """
model_list:
  - model_name: relayed
    litellm_params:
      model: openai/gpt-4o-transcribe
      api_base: {base}
      api_key: {key}
    model_info:
      mode: realtime
general_settings:
  master_key: {master_key}
"""

CHUNK_MS = 100
TONE = (np.sin(2 * np.pi * 220 * np.arange(2400) / 24_000) * 8000).astype("<i2").tobytes()
APPEND = json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(TONE).decode()})
MANUAL_GA = {
    "type": "session.update",
    "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
}


async def session(url: str, headers: dict[str, str], update: dict[str, object], turns: int) -> list[float]:
    """Commit-to-completed latencies of one session's turns, in seconds."""
    latencies = []
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps(update))
        while json.loads(await ws.recv())["type"] != "session.updated":
            pass
        for _ in range(turns):
            for _ in range(1000 // CHUNK_MS):
                await ws.send(APPEND)
            sent = time.perf_counter()
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            while (
                json.loads(await ws.recv())["type"] != "conversation.item.input_audio_transcription.completed"
            ):
                pass
            latencies.append(time.perf_counter() - sent)
    return latencies


async def run(setup: ProviderSetup, sessions: int, turns: int) -> dict[str, list[float]]:
    earshot_ws = setup.server.base_url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    key = Admin(setup.server).create_key()[1]
    earshot_headers = {"Authorization": f"Bearer {key}"}
    engine_update = json.loads(json.dumps(MANUAL_GA))
    engine_update["session"]["audio"]["input"]["transcription"] = {"model": "relayed"}
    paths = {
        "direct": (
            f"{setup.fake_server.ws_url}/v1/realtime?intent=transcription",
            {"Authorization": f"Bearer {OPENAI_KEY}"},
            MANUAL_GA,
        ),
        "relay": (earshot_ws, earshot_headers, MANUAL_GA),
        "engine": (f"{earshot_ws}&model=blank", earshot_headers, engine_update),
    }
    results: dict[str, list[float]] = {}
    for name, (url, headers, update) in paths.items():
        runs = await asyncio.gather(*(session(url, headers, update, turns) for _ in range(sessions)))
        results[name] = [latency for latencies in runs for latency in latencies]
    return results


def wait_listening(base_url: str, process: subprocess.Popen[bytes]) -> None:
    """Wait until the fake provider accepts connections."""
    port = int(base_url.rsplit(":", 1)[1])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit("realtime_relay: the fake provider exited at start")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    sys.exit("realtime_relay: the fake provider did not listen within 30 s")


def show_log_problems(log: IO[bytes], name: str) -> None:
    """The proxy's log lines that say something went wrong, on stderr."""
    log.seek(0)
    lines = [line for line in log.read().decode(errors="replace").splitlines() if LOG_PROBLEM.search(line)]
    for line in lines[:10]:
        print(f"    {name} log: {line[:300]}", file=sys.stderr)


@contextlib.contextmanager
def showing_log_problems(log: IO[bytes], name: str) -> Iterator[None]:
    """show_log_problems once the block is done."""
    yield
    show_log_problems(log, name)


def earshot_key(base_url: str, admin_token: str) -> str:
    """A new API key on the earshot server."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    response = httpx.post(f"{base_url}/admin/keys", json={"name": "bench"}, headers=headers, timeout=30)
    response.raise_for_status()
    key: str = response.json()["key"]
    return key


def run_earshot(args: argparse.Namespace, tmp: Path, fake_url: str, fake_pid: int) -> list[RelayStep]:
    """The capacity steps against `earshot serve` relaying to the fake."""
    admin_token = secrets.token_hex(16)
    config = tmp / "earshot.yaml"
    config.write_text(EARSHOT_CATALOG.format(base=fake_url, key_env=UPSTREAM_KEY_ENV))
    with open(tmp / "earshot.log", "w+b") as log, fresh_database("sqlite", "") as database_url:
        env = {key: value for key, value in os.environ.items() if not key.startswith("EARSHOT_")}
        env.update(
            EARSHOT_CONFIG=str(config),
            EARSHOT_DATABASE_URL=database_url,
            EARSHOT_ENGINE_WORKERS="1",
            EARSHOT_LOG_LEVEL="warning",
            EARSHOT_ADMIN_TOKEN=admin_token,
            **{UPSTREAM_KEY_ENV: OPENAI_KEY},
        )
        with earshot_server(env, log) as (base_url, process), showing_log_problems(log, "earshot"):
            wait_ready(base_url, psutil.Process(process.pid))
            # Sessions authenticate with an API key, as LiteLLM's do with its master key.
            headers = {"Authorization": f"Bearer {earshot_key(base_url, admin_token)}"}
            target = Target("earshot", base_url.replace("http://", "ws://") + WS_QUERY, process.pid, headers)
            return run_target(target, fake_pid, args.steps, args.warmup_s, args.window_s, args.refine)


def run_litellm(args: argparse.Namespace, tmp: Path, fake_url: str, fake_pid: int) -> list[RelayStep]:
    """The capacity steps against LiteLLM's proxy relaying to the fake; LiteLLMUnavailable if it can't run."""
    config = tmp / "litellm.yaml"
    master_key = f"sk-bench-{secrets.token_hex(16)}"
    config.write_text(LITELLM_CONFIG.format(base=fake_url, key=OPENAI_KEY, master_key=master_key))
    with (
        open(tmp / "litellm.log", "w+b") as log,
        litellm_server(config, log, args.litellm_workers) as (base_url, pid),
        showing_log_problems(log, "LiteLLM"),
    ):
        url = base_url.replace("http://", "ws://") + WS_QUERY + "&model=relayed"
        target = Target(f"LiteLLM {LITELLM_VERSION}", url, pid, {"Authorization": f"Bearer {master_key}"})
        return run_target(target, fake_pid, args.steps, args.warmup_s, args.window_s, args.refine)


def capacity(args: argparse.Namespace) -> None:
    """Relayed sessions held at p99 <= 50 ms, earshot and then LiteLLM, against one fake provider."""
    args.steps = args.steps or CAPACITY_STEPS
    results: list[RelayStep] = []
    skipped = ""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="earshot-relay-")))
        fake_log = stack.enter_context(open(tmp / "fake.log", "w+b"))
        fake_env = {**os.environ, "PYTHONPATH": str(REPO)}
        fake_url, fake = stack.enter_context(
            server_process(
                lambda port: [sys.executable, "-c", FAKE_SCRIPT, str(port), TRANSCRIPT], fake_log, fake_env
            )
        )
        wait_listening(fake_url, fake)
        if "earshot" in args.proxies:
            results += run_earshot(args, tmp, fake_url, fake.pid)
        if "litellm" in args.proxies:
            try:
                results += run_litellm(args, tmp, fake_url, fake.pid)
            except LiteLLMUnavailable as e:
                skipped = str(e)
    print(
        f"\nRelayed /v1/realtime sessions at real-time pace (100 ms appends, a commit every 1 s), "
        f"{args.window_s:g} s windows after {args.warmup_s:g} s; held = p99 commit-to-completed lag "
        f"<= {MAX_LAG_MS:g} ms, every turn completed, no session failed; {psutil.cpu_count()} CPUs\n"
    )
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for step in results:
        print("| " + " | ".join(row(step)) + " |")
    ours = largest_held([step for step in results if step.target == "earshot"])
    print(f"\nearshot: largest N held {ours or 'none'}")
    if skipped:
        print(f"LiteLLM: left out ({skipped})")
    else:
        theirs = largest_held([step for step in results if step.target != "earshot"])
        ratio = f"{ours / theirs:.2f}x" if theirs else "n/a (LiteLLM held none)"
        print(
            f"LiteLLM {LITELLM_VERSION}: largest N held {theirs or 'none'}; "
            f"earshot / LiteLLM = {ratio} (target >= 2.5x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,10,50")
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--capacity", action="store_true", help="sessions held at p99 <= 50 ms, with LiteLLM")
    parser.add_argument("--steps", type=positive_counts, help="capacity: session counts to step through")
    parser.add_argument("--window-s", type=float, default=10.0, help="capacity: measurement window per step")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="capacity: streaming before the window")
    parser.add_argument(
        "--refine", type=int, default=2, help="capacity: bisecting steps after the first failure"
    )
    parser.add_argument(
        "--proxies", type=lambda text: text.split(","), default=["earshot", "litellm"], help="capacity: which"
    )
    parser.add_argument("--litellm-workers", type=int, default=1, help="capacity: LiteLLM's --num_workers")
    args = parser.parse_args()
    if args.capacity:
        capacity(args)
        return
    with tempfile.TemporaryDirectory() as tmp, provider_setup(Path(tmp)) as setup:
        print("| sessions | path | turns | p50 ms | p95 ms | max ms |")
        print("|---:|---|---:|---:|---:|---:|")
        for count in (int(n) for n in args.sessions.split(",")):
            for name, latencies in asyncio.run(run(setup, count, args.turns)).items():
                ms = sorted(1000 * x for x in latencies)
                p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
                p50 = statistics.median(ms)
                print(f"| {count} | {name} | {len(ms)} | {p50:.1f} | {p95:.1f} | {ms[-1]:.1f} |")


if __name__ == "__main__":
    main()
