"""Live transcription through earshot's /ws/transcribe with the earshot client library.

Streams an audio file at real-time pace (as a microphone would; --fast sends it as fast as the server takes
it) and prints each final as it arrives, a note when the key's credit runs low, and the seconds the server
counted. With --mic it captures the microphone instead until Ctrl-C (needs `pip install 'earshot[mic]'`).

Usage:
    python examples/managed_client.py AUDIO_FILE [--fast]
    python examples/managed_client.py --mic

EARSHOT_BASE_URL (default http://127.0.0.1:8000) is the server; EARSHOT_API_KEY is the key (any value while
the server has no keys).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from earshot.client import (
    AudioSource,
    AuthError,
    CreditsLow,
    FileSource,
    MicrophoneSource,
    StreamingTranscriber,
    TranscriberError,
    Transcript,
)


def on_final(event: Transcript) -> None:
    print(f"[{event.start:6.2f}-{event.end:6.2f}] {event.text}", flush=True)


def on_credits_low(event: CreditsLow) -> None:
    print(f"(credit running low: {event.seconds_remaining:.0f} s left)", file=sys.stderr)


async def main(source: AudioSource) -> int:
    transcriber = StreamingTranscriber.managed(
        os.environ.get("EARSHOT_BASE_URL", "http://127.0.0.1:8000"),
        os.environ.get("EARSHOT_API_KEY", ""),
        source,
        on_final=on_final,
        on_credits_low=on_credits_low,
    )
    # Ctrl-C stops capturing; what was captured is still transcribed.
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, transcriber.stop)
    try:
        summary = await transcriber.run()
    except AuthError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 3
    except TranscriberError as e:
        print(f"failed: {e}", file=sys.stderr)
        return 1
    print(f"{summary.seconds_used:.2f} s of audio over {summary.connections} connection(s)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio_file", nargs="?")
    parser.add_argument("--fast", action="store_true", help="send the file as fast as the server takes it")
    parser.add_argument("--mic", action="store_true", help="capture the microphone instead of a file")
    args = parser.parse_args()
    if args.mic == bool(args.audio_file):
        parser.error("give an AUDIO_FILE or --mic")
    chosen = MicrophoneSource() if args.mic else FileSource(args.audio_file, realtime=not args.fast)
    sys.exit(asyncio.run(main(chosen)))
