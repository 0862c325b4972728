"""Relay benchmark: what relaying a /v1/realtime session through earshot adds to a provider's latency.

Run as `.venv/bin/python bench/realtime_relay.py [--sessions 1,10,50] [--turns 5]`. A fake OpenAI provider
(tests/fakes/openai.py, answering at once) runs in this process; an earshot server routes its default model to
it. Each session appends 1 s of 24 kHz PCM16 per turn in 100 ms events, commits, and waits for the transcript.
Latency = commit sent -> `.completed` received, for the same sessions sent straight to the fake ("direct"),
relayed by earshot ("relay"), and through earshot's own session and the provider's engine stream ("engine":
connected on a local model, then switched to the provider model, so earshot's turn logic drives the socket).
It prints a markdown table; it never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import Admin
from tests.e2e.provider_server import ProviderSetup, provider_setup
from tests.fakes.openai import OPENAI_KEY

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,10,50")
    parser.add_argument("--turns", type=int, default=5)
    args = parser.parse_args()
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
