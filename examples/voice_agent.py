"""Talk to an earshot voice agent with the official OpenAI Python SDK: a spoken question in, the spoken
answer out.

Streams a recorded question to `WS /v1/realtime?model=AGENT` at real-time pace, as a microphone would; the
server's voice activity detection ends the turn, the agent's chat model answers, and its synthesized answer
(PCM16, 24 kHz) is written to ANSWER_WAV while its transcript is printed.

Usage:
    python examples/voice_agent.py QUESTION_AUDIO ANSWER_WAV [--agent assistant] [--session-id ID]

The server's catalog needs a `voice_agents` entry (examples/earshot.yaml). EARSHOT_BASE_URL (default
http://127.0.0.1:8000) is the server; EARSHOT_API_KEY is the key (any value while the server has no keys).
--session-id talks in an existing session of that key (POST /v1/sessions), so a text conversation can go on
by voice. Needs `pip install 'openai[realtime]'` and earshot installed (it decodes the question with it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import wave
from pathlib import Path

import numpy as np
import soxr
from openai import AsyncOpenAI

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import ENGINE_RATE_HZ, float_to_pcm16

RATE_HZ = 24_000  # the Realtime API's audio, both ways: PCM16, 24 kHz, mono, little-endian
CHUNK_MS = 100
TRAILING_SILENCE_S = 1.5  # so the server VAD hears the question end


def question_pcm(question: Path) -> bytes:
    """The question as 24 kHz PCM16, with silence after it."""
    samples = decode_audio(question.read_bytes()).samples
    samples = np.concatenate(
        [soxr.resample(samples, ENGINE_RATE_HZ, RATE_HZ), np.zeros(int(RATE_HZ * TRAILING_SILENCE_S))]
    )
    return float_to_pcm16(samples.astype(np.float32))


async def ask(pcm: bytes, answer_wav: Path, agent: str, session_id: str | None) -> int:
    base_url = os.environ.get("EARSHOT_BASE_URL", "http://127.0.0.1:8000")
    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key=os.environ.get("EARSHOT_API_KEY", "unused"))
    step = RATE_HZ * 2 * CHUNK_MS // 1000
    audio = bytearray()
    query = {"session_id": session_id} if session_id else {}
    async with client.realtime.connect(model=agent, extra_query=query) as connection:
        created = await connection.recv()
        print(f"session {created.session.id}", file=sys.stderr)  # type: ignore[union-attr]

        async def speak() -> None:
            for start in range(0, len(pcm), step):
                await connection.input_audio_buffer.append(
                    audio=base64.b64encode(pcm[start : start + step]).decode()
                )
                await asyncio.sleep(CHUNK_MS / 1000)

        speaking = asyncio.create_task(speak())
        async for event in connection:
            if event.type == "conversation.item.input_audio_transcription.completed":
                print(f"you:   {event.transcript}")
            elif event.type == "response.output_audio_transcript.delta":
                print(event.delta, end="", flush=True)
            elif event.type == "response.output_audio.delta":
                audio += base64.b64decode(event.delta)
            elif event.type == "response.done":
                print()
                if event.response.status != "completed":
                    print(f"the response ended {event.response.status}", file=sys.stderr)
                break
            elif event.type == "error":
                print(f"error: {event.error.message}", file=sys.stderr)
                return 1
        speaking.cancel()
    await asyncio.to_thread(write_wav, answer_wav, bytes(audio))
    print(f"wrote {len(audio) / (RATE_HZ * 2):.1f} s of the answer to {answer_wav}", file=sys.stderr)
    return 0


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE_HZ)
        out.writeframes(pcm)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("question", type=Path, help="the spoken question (any format earshot decodes)")
    parser.add_argument("answer_wav", type=Path, help="where to write the spoken answer")
    parser.add_argument("--agent", default="assistant", help="a voice agent of the server's catalog")
    parser.add_argument("--session-id", help="talk in this existing session of your key")
    args = parser.parse_args()
    return asyncio.run(ask(question_pcm(args.question), args.answer_wav, args.agent, args.session_id))


if __name__ == "__main__":
    sys.exit(main())
