"""Transcribe a long recording into a stored earshot document, watching it grow, then export it as subtitles.

Usage:
    python examples/transcripts.py [BASE_URL] AUDIO_FILE

BASE_URL defaults to http://127.0.0.1:8000; the API key is read from $EARSHOT_API_KEY (none while the server
has no keys). Needs `httpx` (installed with earshot) and a running `earshot serve`. Writes the subtitles
beside AUDIO_FILE, with the suffix `.srt`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx


def transcribe(base_url: str, audio: Path, headers: dict[str, str]) -> dict[str, Any]:
    """POST /v1/transcripts, streamed: print each snapshot's progress and last words; return the document."""
    with (
        audio.open("rb") as f,
        httpx.stream(
            "POST",
            f"{base_url}/v1/transcripts",
            files={"file": (audio.name, f)},
            headers={**headers, "Accept": "text/event-stream"},
            timeout=None,
        ) as response,
    ):
        if response.status_code != 200:
            raise SystemExit(f"refused: {response.status_code} {response.read().decode()}")
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                if event == "queued":
                    print(f"waiting, number {data['position']} in line", file=sys.stderr)
                elif event == "transcription":
                    text = " ".join(paragraph["text"] for paragraph in data["paragraphs"])
                    print(
                        f"{data['current_time']:7.1f}/{data['total_time']:.1f} s  ...{text[-60:]}",
                        file=sys.stderr,
                    )
                elif event == "done":
                    document: dict[str, Any] = data
                    return document
                elif event == "error":
                    raise SystemExit(f"failed: {data['code']}: {data['detail']}")
    raise SystemExit("the stream ended without a document")


def main(argv: list[str]) -> int:
    if len(argv) == 2:
        base_url, audio = "http://127.0.0.1:8000", Path(argv[1])
    elif len(argv) == 3:
        base_url, audio = argv[1].rstrip("/"), Path(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    key = os.environ.get("EARSHOT_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    document = transcribe(base_url, audio, headers)
    cached = " (from the cache)" if document["cached"] else ""
    print(f"document {document['id']}: {len(document['paragraphs'])} paragraphs{cached}", file=sys.stderr)
    srt = httpx.get(f"{base_url}/v1/transcripts/{document['id']}", params={"format": "srt"}, headers=headers)
    srt.raise_for_status()
    audio.with_suffix(".srt").write_text(srt.text, encoding="utf-8")
    print(" ".join(paragraph["text"] for paragraph in document["paragraphs"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
