"""A clean install serves: `earshot serve` from a venv made with `pip install .` alone transcribes a clip and
speaks a sentence (espeak-ng from its wheel).

It also serves the web page and its files at `/` and `/web/`, which only a wheel that ships them can do.

Run with that venv's python: `python scripts/clean_install_check.py VENV`. Standard library only, since the
venv has no dev tools. Exits 1 with the server's log on a missing module, a server that never gets ready, or
a transcript that is not the clip's; exits 0 (saying why) when ../shared/audio is absent.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared" / "audio" / "jfk" / "jfk.flac"
EXPECTED = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"
READY_WITHIN_S = 120
WEB_FILES = {"/": "text/html", "/web/app.js": "text/javascript", "/web/app.css": "text/css"}
MAX_WORD_ERRORS = 2


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]+", " ", text.lower()).split()


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    # tests/e2e/wer.py has the same Levenshtein; this script runs in a venv without the tests' packages.
    row = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        diagonal, row[0] = row[0], i
        for j, hyp_word in enumerate(hypothesis, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ref_word != hyp_word))
    return row[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def multipart(fields: dict[str, str], file_name: str, file_bytes: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + file_bytes
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def wait_ready(base_url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"earshot serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"earshot serve was not ready within {READY_WITHIN_S} s")


def check_web_page(base_url: str) -> None:
    for path, media_type in WEB_FILES.items():
        with urllib.request.urlopen(f"{base_url}{path}", timeout=10) as response:
            served_type = response.headers.get("content-type", "")
            if not served_type.startswith(media_type) or not response.read():
                raise RuntimeError(f"GET {path} answered {served_type!r}, not a {media_type} file")


def speak(base_url: str) -> float:
    """Seconds of speech `POST /v1/audio/speech` gives a sentence as WAV (24 kHz PCM16 after 44 bytes)."""
    body = json.dumps(
        {"model": "tts-1", "voice": "alloy", "input": "Hello from earshot.", "response_format": "wav"}
    )
    request = urllib.request.Request(
        f"{base_url}/v1/audio/speech",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        audio = response.read()
    seconds = (len(audio) - 44) / 48_000
    if audio[:4] != b"RIFF" or seconds < 0.5:
        raise RuntimeError(f"speech synthesis gave {len(audio)} bytes, not a WAV of speech")
    return seconds


def main() -> int:
    venv = Path(sys.argv[1])
    if not CLIP.exists():
        print(f"clean install: skipped, {CLIP} is absent (../shared/audio sits beside the repo)")
        return 0
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as workdir:
        log_path = Path(workdir) / "server.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [str(venv / "bin" / "earshot"), "serve", "--port", str(port)],
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_ready(base_url, server)
            check_web_page(base_url)
            body, content_type = multipart({"model": "whisper-1"}, CLIP.name, CLIP.read_bytes())
            request = urllib.request.Request(
                f"{base_url}/v1/audio/transcriptions",
                data=body,
                headers={"Content-Type": content_type},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                text = json.loads(response.read())["text"]
            if word_errors(words(EXPECTED), words(text)) > MAX_WORD_ERRORS:
                raise RuntimeError(f"wrong transcript: {text!r}")
            spoken_s = speak(base_url)
        except (RuntimeError, urllib.error.URLError, OSError, KeyError, ValueError) as e:
            print(f"clean install: FAILED: {e}\n--- server log ---\n{log_path.read_text(errors='replace')}")
            return 1
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    print(
        f"clean install: `pip install .` serves the web page, transcribed {CLIP.name}: {text!r},"
        f" spoke {spoken_s:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
