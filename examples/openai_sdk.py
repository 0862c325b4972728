"""Transcribe a file through earshot with the official OpenAI Python SDK.

Usage:
    python examples/openai_sdk.py [BASE_URL] AUDIO_FILE

BASE_URL defaults to http://127.0.0.1:8000/v1; the API key is read from $EARSHOT_API_KEY.
Needs `pip install openai` and a running `earshot serve`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from openai import OpenAI


def main(argv: list[str]) -> int:
    if len(argv) == 2:
        base_url, audio = "http://127.0.0.1:8000/v1", Path(argv[1])
    elif len(argv) == 3:
        base_url, audio = argv[1], Path(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2

    # A fresh earshot on loopback serves anonymously until the first key exists; the SDK wants one anyway.
    client = OpenAI(base_url=base_url, api_key=os.environ.get("EARSHOT_API_KEY", "anonymous"))

    # One request, one JSON answer. `whisper-1` is an alias for the server's default model.
    with audio.open("rb") as f:
        transcript = client.audio.transcriptions.create(model="whisper-1", file=f)
    print("text:", transcript.text)

    # The same file as Server-Sent Events: a delta per speech region, as soon as it is decoded.
    with audio.open("rb") as f:
        stream = client.audio.transcriptions.create(model="whisper-1", file=f, stream=True)
        for event in stream:
            if event.type == "transcript.text.delta":
                print("delta:", event.delta, flush=True)
            elif event.type == "transcript.text.done":
                print("done:", event.text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
