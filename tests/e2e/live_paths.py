"""Each live path driven the way a client streams a whole clip: audio as fast as it is taken, then the end.

Every function takes the socket URL and a 16 kHz float clip (already followed by a second of silence, so the
last turn ends) and returns the final text of the session.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import websockets

from earshot.audio.pcm import float_to_pcm16
from tests.e2e.realtime_client import chunks, pcm24

CHUNK_BYTES = 3200  # 100 ms of 16 kHz PCM16


async def realtime_session(url: str, samples: np.ndarray) -> str:
    """Every completed transcript of a session that streams the clip then a second of silence."""
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()
        for payload in chunks(pcm24(samples), 48_000, 100):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": payload}))
        # Messages are handled in order: once the answer to an update arrives, every append before it
        # has been heard, and every turn committed by then (the last one by the commit) is awaited.
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription"}}))
        committed, heard_all = 0, False
        transcripts: list[str] = []
        while not heard_all or len(transcripts) < committed:
            event = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if event["type"] == "input_audio_buffer.committed":
                committed += 1
            elif event["type"] == "conversation.item.input_audio_transcription.completed":
                transcripts.append(event["transcript"])
            heard_all = heard_all or event["type"] == "session.updated"
        return " ".join(text for text in transcripts if text)


async def deepgram_session(url: str, samples: np.ndarray) -> str:
    """The final Results of a stream of the clip and a second of silence, ended by CloseStream."""
    audio = float_to_pcm16(samples)
    finals: list[str] = []
    async with websockets.connect(url, max_size=None) as ws:
        for start in range(0, len(audio), CHUNK_BYTES):
            await ws.send(audio[start : start + CHUNK_BYTES])
        await ws.send(json.dumps({"type": "CloseStream"}))
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] == "Results" and message["is_final"]:
                finals.append(message["channel"]["alternatives"][0]["transcript"])
            elif message["type"] == "Metadata":
                break
    return " ".join(text for text in finals if text)


async def managed_session(url: str, samples: np.ndarray) -> str:
    """The finals of a /ws/transcribe session (interim results on) that streams the clip, then closes."""
    pcm = float_to_pcm16(samples)
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "auth", "token": "", "config": {"sample_rate": 16000}}))
        assert json.loads(await ws.recv())["type"] == "ready"
        for offset in range(0, len(pcm), CHUNK_BYTES):
            await ws.send(pcm[offset : offset + CHUNK_BYTES])
        await ws.send(json.dumps({"type": "close"}))
        finals: list[str] = []
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if message["type"] == "transcript" and message["is_final"]:
                finals.append(message["text"])
            elif message["type"] == "session_end":
                return " ".join(finals)
