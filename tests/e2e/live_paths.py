"""Each live path driven the way a client streams a whole clip: the audio, then the end.

Every function takes the socket URL and a 16 kHz float clip (already followed by a second of silence, so the
last turn ends) and returns the final text of the session. The audio goes in `chunk_ms` pieces, as fast as
the server takes it, or at `speed` times real-time pace when that is given.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence

import numpy as np
import websockets

from earshot.audio.pcm import ENGINE_RATE_HZ, float_to_pcm16
from tests.e2e.realtime_client import Payload, chunks, paced, pcm24

CHUNK_MS = 100
# How long a client waits for the next message once it has sent all its audio.
REPLY_TIMEOUT_S = 60


async def send_audio(
    payloads: Sequence[Payload],
    chunk_ms: int,
    speed: float | None,
    send: Callable[[Payload], Awaitable[None]],
) -> None:
    if speed is not None:
        await paced(payloads, chunk_ms, send, speed)
        return
    for payload in payloads:
        await send(payload)


def pcm_chunks(pcm: bytes, rate_hz: int, chunk_ms: int) -> list[bytes]:
    """PCM16 cut into pieces of `chunk_ms` each."""
    step = 2 * rate_hz * chunk_ms // 1000
    return [pcm[start : start + step] for start in range(0, len(pcm), step)]


async def realtime_session(
    url: str, samples: np.ndarray, chunk_ms: int = CHUNK_MS, speed: float | None = None
) -> str:
    """Every completed transcript of a session that streams the clip (24 kHz appends), then commits."""
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()

        async def append(payload: str) -> None:
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": payload}))

        await send_audio(chunks(pcm24(samples), 48_000, chunk_ms), chunk_ms, speed, append)
        # Messages are handled in order: once the answer to an update arrives, every append before it
        # has been heard, and every turn committed by then (the last one by the commit) is awaited.
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription"}}))
        committed, heard_all = 0, False
        transcripts: list[str] = []
        while not heard_all or len(transcripts) < committed:
            event = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_S))
            if event["type"] == "input_audio_buffer.committed":
                committed += 1
            elif event["type"] == "conversation.item.input_audio_transcription.completed":
                transcripts.append(event["transcript"])
            heard_all = heard_all or event["type"] == "session.updated"
        return " ".join(text for text in transcripts if text)


async def deepgram_session(
    url: str, samples: np.ndarray, chunk_ms: int = CHUNK_MS, speed: float | None = None
) -> str:
    """The final Results of a stream of the clip and a second of silence, ended by CloseStream."""
    finals: list[str] = []
    async with websockets.connect(url, max_size=None) as ws:
        pieces = pcm_chunks(float_to_pcm16(samples), ENGINE_RATE_HZ, chunk_ms)
        await send_audio(pieces, chunk_ms, speed, ws.send)
        await ws.send(json.dumps({"type": "CloseStream"}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_S))
            if message["type"] == "Results" and message["is_final"]:
                finals.append(message["channel"]["alternatives"][0]["transcript"])
            elif message["type"] == "Metadata":
                break
    return " ".join(text for text in finals if text)


async def managed_session(
    url: str, samples: np.ndarray, chunk_ms: int = CHUNK_MS, speed: float | None = None
) -> str:
    """The finals of a /ws/transcribe session (interim results on) that streams the clip, then closes."""
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "auth", "token": "", "config": {"sample_rate": 16000}}))
        assert json.loads(await ws.recv())["type"] == "ready"
        pieces = pcm_chunks(float_to_pcm16(samples), ENGINE_RATE_HZ, chunk_ms)
        await send_audio(pieces, chunk_ms, speed, ws.send)
        await ws.send(json.dumps({"type": "close"}))
        finals: list[str] = []
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_S))
            if message["type"] == "transcript" and message["is_final"]:
                finals.append(message["text"])
            elif message["type"] == "session_end":
                return " ".join(finals)
