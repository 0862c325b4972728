"""Speech synthesis benchmark: time to the first byte and real-time factor of /v1/audio/speech per format.

Run as `.venv/bin/python bench/speech.py [--repeat K] [--clients 1,4]`. A fresh `earshot serve` with the
embedded catalog (espeak-ng) speaks a five-sentence paragraph in every format, K times per client, with each
count of concurrent clients. "first byte" is the median wall time from sending the request to the first body
byte, "total" the median to the last; RTF is wall seconds per second of audio (lower is faster), over all
requests of the row. It prints a table and never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from serving import earshot_server, positive_counts

PARAGRAPH = (
    "Please open the door and turn on the light. The weather is nice today, so we will walk to the park. "
    "Bring a coat in case it rains later in the afternoon. The train leaves the station at seven o'clock. "
    "We should be home again before it gets dark."
)
FORMATS = ("pcm", "wav", "mp3", "opus", "aac", "flac")
READY_TIMEOUT_S = 120.0
PCM_BYTES_PER_S = 48_000


async def wait_ready(base_url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(f"{base_url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("earshot serve did not get ready")


async def speak(http: httpx.AsyncClient, base_url: str, fmt: str) -> tuple[float, float, int]:
    """(seconds to the first byte, seconds to the last, body bytes) of one request."""
    body = {"model": "tts-1", "voice": "alloy", "input": PARAGRAPH, "response_format": fmt}
    started = time.perf_counter()
    first = 0.0
    size = 0
    async with http.stream("POST", f"{base_url}/v1/audio/speech", json=body) as response:
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            if chunk and not size:
                first = time.perf_counter() - started
            size += len(chunk)
    return first, time.perf_counter() - started, size


async def run(base_url: str, repeat: int, client_counts: tuple[int, ...]) -> None:
    async with httpx.AsyncClient(timeout=120) as http:
        _, _, pcm_bytes = await speak(http, base_url, "pcm")  # warm-up, and the paragraph's length
        audio_s = pcm_bytes / PCM_BYTES_PER_S
        print(f"paragraph: {len(PARAGRAPH)} characters, {audio_s:.1f} s of speech at 24 kHz\n")
        header = f"{'format':<7}{'clients':>8}{'requests':>10}{'first byte ms':>15}{'total ms':>10}{'RTF':>8}"
        print(header)
        print("-" * len(header))
        for fmt in FORMATS:
            for clients in client_counts:

                async def one_client(fmt: str = fmt) -> list[tuple[float, float, int]]:
                    return [await speak(http, base_url, fmt) for _ in range(repeat)]

                started = time.perf_counter()
                results = [
                    r for rs in await asyncio.gather(*(one_client() for _ in range(clients))) for r in rs
                ]
                wall_s = time.perf_counter() - started
                first_ms = statistics.median(r[0] for r in results) * 1000
                total_ms = statistics.median(r[1] for r in results) * 1000
                rtf = wall_s / (audio_s * len(results))
                print(f"{fmt:<7}{clients:>8}{len(results):>10}{first_ms:>15.1f}{total_ms:>10.1f}{rtf:>8.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="requests per client per row")
    parser.add_argument(
        "--clients", type=positive_counts, default=[1, 4], help="concurrent clients, e.g. 1,4"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "EARSHOT_DATABASE_URL": f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"}
        with (Path(tmp) / "server.log").open("wb") as log, earshot_server(env, log) as (base_url, _):
            asyncio.run(wait_ready(base_url))
            asyncio.run(run(base_url, args.repeat, args.clients))


if __name__ == "__main__":
    main()
