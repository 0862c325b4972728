"""Speak a text through earshot with the official OpenAI Python SDK, streamed to a file as it is synthesized.

Usage:
    python examples/openai_speech.py [BASE_URL] OUT_FILE TEXT...

BASE_URL defaults to http://127.0.0.1:8000/v1; the API key is read from $EARSHOT_API_KEY. The format follows
OUT_FILE's extension (mp3, opus, aac, flac, wav or pcm). Needs `pip install openai` and `earshot serve`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from openai import OpenAI

FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


def main(argv: list[str]) -> int:
    args = argv[1:]
    base_url = (
        args.pop(0) if args and args[0].startswith(("http://", "https://")) else "http://127.0.0.1:8000/v1"
    )
    if len(args) < 2 or Path(args[0]).suffix.lstrip(".") not in FORMATS:
        print(__doc__, file=sys.stderr)
        return 2
    out, text = Path(args[0]), " ".join(args[1:])
    # A fresh earshot on loopback serves anonymously until the first key exists; the SDK wants one anyway.
    client = OpenAI(base_url=base_url, api_key=os.environ.get("EARSHOT_API_KEY", "anonymous"))
    with (
        client.audio.speech.with_streaming_response.create(
            model="tts-1",
            voice="alloy",
            input=text,
            response_format=out.suffix.lstrip("."),  # type: ignore[arg-type]
        ) as response,
        out.open("wb") as file,
    ):
        for chunk in response.iter_bytes():
            file.write(chunk)
    print(f"{out}: {out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
