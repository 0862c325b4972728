"""Transcribe a file through earshot with the official Deepgram Python SDK: prerecorded, then live.

Usage:
    python examples/deepgram_sdk.py [BASE_URL] AUDIO_FILE

BASE_URL defaults to http://127.0.0.1:8000; the API key is read from $EARSHOT_API_KEY (any value while the
server has no keys). Needs `pip install deepgram-sdk` and a running `earshot serve`. The live part decodes the
file to 16 kHz PCM16 with earshot's decoder and streams it at twice real time.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from deepgram import AsyncDeepgramClient, DeepgramClient
from deepgram.environment import DeepgramClientEnvironment

from earshot.audio.decode import decode_audio

CHUNK_BYTES = 3200  # 100 ms of 16 kHz PCM16


def environment(base_url: str) -> DeepgramClientEnvironment:
    """The SDK's endpoints, all pointed at earshot."""
    ws_url = base_url.replace("http://", "ws://").replace("https://", "wss://")
    return DeepgramClientEnvironment(base=base_url, production=ws_url, agent=ws_url, agent_rest=base_url)


async def live(base_url: str, key: str, pcm16: bytes) -> None:
    client = AsyncDeepgramClient(api_key=key, environment=environment(base_url))
    # `nova-3` isn't an earshot model: names the catalog doesn't know mean the server's default model.
    async with client.listen.v1.connect(
        model="nova-3",
        encoding="linear16",
        sample_rate=16000,
        interim_results="true",
        punctuate="true",
        vad_events="true",
    ) as connection:

        async def show() -> None:
            async for message in connection:
                kind = getattr(message, "type", "")
                if kind == "Results" and message.channel.alternatives[0].transcript:
                    label = "final  " if message.is_final else "interim"
                    if message.from_finalize:
                        label = "flushed"
                    print(f"  {label} [{message.start:5.2f}s] {message.channel.alternatives[0].transcript}")
                elif kind == "SpeechStarted":
                    print(f"  speech started at {message.timestamp:.2f}s")
                elif kind == "Metadata":
                    print(f"  metadata: {message.duration:.2f}s of audio, request {message.request_id}")

        reader = asyncio.create_task(show())
        for start in range(0, len(pcm16), CHUNK_BYTES):
            await connection.send_media(pcm16[start : start + CHUNK_BYTES])
            await asyncio.sleep(0.05)
        # Finalize flushes what was heard into finals (the stream stays open); CloseStream ends it.
        await connection.send_finalize()
        await connection.send_close_stream()
        await reader


def main(argv: list[str]) -> int:
    if len(argv) == 2:
        base_url, audio = "http://127.0.0.1:8000", Path(argv[1])
    elif len(argv) == 3:
        base_url, audio = argv[1].rstrip("/"), Path(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    key = os.environ.get("EARSHOT_API_KEY", "anonymous")

    client = DeepgramClient(api_key=key, environment=environment(base_url))
    response = client.listen.v1.media.transcribe_file(
        request=audio.read_bytes(), model="nova-3", punctuate=True, utterances=True
    )
    print("prerecorded:", response.results.channels[0].alternatives[0].transcript)
    for utterance in response.results.utterances or []:
        print(f"  [{utterance.start:5.2f}-{utterance.end:5.2f}] {utterance.transcript}")

    print("live:")
    asyncio.run(live(base_url, key, decode_audio(audio.read_bytes()).pcm16()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
