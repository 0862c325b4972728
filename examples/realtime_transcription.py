"""Live transcription through earshot's /v1/realtime with the official OpenAI Python SDK.

Streams an audio file to `WS /v1/realtime?intent=transcription` at real-time pace, as a microphone would, and
prints the transcript deltas as they arrive and each completed transcript.

Usage:
    python examples/realtime_transcription.py AUDIO_FILE [--manual]

AUDIO_FILE is any file earshot can decode (wav, flac, mp3, ...). By default the server's voice activity
detection finds the turns; with --manual it is turned off and the whole file is committed as one turn
(with pocketsphinx, keep such files under 30 s).
EARSHOT_BASE_URL (default http://127.0.0.1:8000) is the server; EARSHOT_API_KEY is the key (any value while
the server has no keys). Run it from a checkout with earshot installed (it decodes the file with earshot's
decoder); it needs the openai SDK with its realtime extra: `pip install 'openai[realtime]'`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import soxr
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import ENGINE_RATE_HZ, float_to_pcm16

RATE_HZ = 24_000  # the Realtime API's default input: PCM16, 24 kHz, mono, little-endian
CHUNK_MS = 100
# Silence sent after the file, so the server VAD hears the last turn end (it waits 500 ms by default).
TRAILING_SILENCE_S = 1.5


def load_pcm24(path: Path) -> bytes:
    """The file as PCM16 at 24 kHz: decoded to 16 kHz mono by earshot, then resampled with soxr."""
    samples = decode_audio(path.read_bytes()).samples
    resampled = soxr.resample(samples, ENGINE_RATE_HZ, RATE_HZ)
    return float_to_pcm16(np.asarray(resampled, dtype=np.float32))


async def main(path: Path, manual: bool) -> int:
    base_url = os.environ.get("EARSHOT_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key=os.environ.get("EARSHOT_API_KEY", "unused"))
    audio = load_pcm24(path)
    if not manual:
        audio += bytes(int(TRAILING_SILENCE_S * RATE_HZ) * 2)
    step = RATE_HZ * 2 * CHUNK_MS // 1000
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.2f}s] {text}", flush=True)

    async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        created = await connection.recv()  # session.created, with the session's defaults
        session = created.to_dict()["session"]
        say(f"{created.type}: model {session['audio']['input']['transcription']['model']}")
        if manual:
            # turn_detection null: no server VAD, the client says where a turn ends with a commit.
            await connection.session.update(
                session={"type": "transcription", "audio": {"input": {"turn_detection": None}}}
            )

        # Set while no turn awaits its transcript: once the audio is sent and it is set, we are done.
        settled = asyncio.Event()
        settled.set()
        open_items: set[str] = set()

        def opened(item_id: str) -> None:
            open_items.add(item_id)
            settled.clear()

        def closed(item_id: str) -> None:
            open_items.discard(item_id)
            if not open_items:
                settled.set()

        async def send_audio() -> None:
            """Append the audio in 100 ms chunks at real-time pace, then commit it in manual mode."""
            start = time.monotonic()
            for index, offset in enumerate(range(0, len(audio), step)):
                chunk = base64.b64encode(audio[offset : offset + step]).decode()
                await connection.input_audio_buffer.append(audio=chunk)
                await asyncio.sleep(max(0.0, start + (index + 1) * CHUNK_MS / 1000 - time.monotonic()))
            say(f"sent {len(audio) / 2 / RATE_HZ:.2f} s of audio")
            if manual:
                settled.clear()  # the commit's transcript is still to come
                await connection.input_audio_buffer.commit()

        async def receive_events() -> None:
            async for event in connection:
                if event.type == "session.updated":
                    say("session.updated: turn detection off, manual commits")
                elif event.type == "input_audio_buffer.speech_started":
                    opened(event.item_id)
                    say(f"speech started at {event.audio_start_ms} ms")
                elif event.type == "input_audio_buffer.speech_stopped":
                    say(f"speech stopped at {event.audio_end_ms} ms")
                elif event.type == "input_audio_buffer.committed":
                    opened(event.item_id)
                    say(f"committed {event.item_id}")
                elif event.type == "conversation.item.input_audio_transcription.delta":
                    say(f"delta: {event.delta!r}")
                elif event.type == "conversation.item.input_audio_transcription.completed":
                    seconds = getattr(event.usage, "seconds", 0.0)  # usage: {"type": "duration", "seconds"}
                    say(f"completed ({seconds:.2f} s of audio): {event.transcript!r}")
                    closed(event.item_id)
                elif event.type == "conversation.item.input_audio_transcription.failed":
                    say(f"failed: {event.error.message}")
                    closed(event.item_id)
                elif event.type == "error":
                    say(f"error {event.error.code}: {event.error.message}")

        receiver = asyncio.create_task(receive_events())
        try:
            await send_audio()
            settling = asyncio.create_task(settled.wait())
            await asyncio.wait([receiver, settling], return_when=asyncio.FIRST_COMPLETED)
            settling.cancel()
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver  # raises ConnectionClosedError if the server ended the session with an error
        except ConnectionClosed as e:
            say(f"the server closed the session: code {e.rcvd.code if e.rcvd else 'none'}")
            return 1
        finally:
            receiver.cancel()
            if receiver.done() and not receiver.cancelled():
                receiver.exception()  # already reported above
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("audio_file", type=Path)
    parser.add_argument(
        "--manual", action="store_true", help="no server VAD: commit the whole file as one turn"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.audio_file, args.manual)))
