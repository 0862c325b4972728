"""`earshot listen` against a real server: captions, JSON events, and one-line failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from earshot.audio.decode import decode_audio
from tests.conftest import ADMIN_TOKEN, Admin, RunningServer, shared_audio, start_server, stop_server
from tests.e2e.wer import words

CLIP = "pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0880.wav"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("listen"), {"EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        yield server
    finally:
        stop_server(server)


def listen(*args: str, stdin: bytes | None = None, **env_changes: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("EARSHOT_API_KEY", "DEEPGRAM_API_KEY")}
    env.update(env_changes)
    command = [sys.executable, "-m", "earshot", "listen", *args]
    return subprocess.run(command, input=stdin, capture_output=True, timeout=60, env=env)


def test_listen_to_a_file_prints_the_finals(keyed: RunningServer) -> None:
    _, key = Admin(keyed).create_key()
    done = listen("--file", str(shared_audio(CLIP)), "--server", keyed.base_url, "--key", key)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.decode()
    assert {"he", "was", "young", "man"} <= set(words(printed))
    assert "\r" not in printed, "without a terminal, only finals are printed, one per line"


def test_listen_byok_talks_deepgram_live_to_the_given_url(keyed: RunningServer) -> None:
    _, key = Admin(keyed).create_key()
    clip = str(shared_audio(CLIP))
    done = listen("--file", clip, "--fast", "--byok", "--deepgram-key", key, "--deepgram-url", keyed.base_url)
    assert done.returncode == 0, done.stderr
    assert {"young", "man"} <= set(words(done.stdout.decode()))


def test_listen_json_gives_one_event_per_line(keyed: RunningServer) -> None:
    _, key = Admin(keyed).create_key()
    pcm = decode_audio(shared_audio(CLIP).read_bytes()).pcm16()
    done = listen("--stdin", "--json", "--server", keyed.base_url, "--key", key, stdin=pcm)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.decode().splitlines()]
    kinds = {event["type"] for event in events}
    assert {"transcript", "utterance_end", "session_end"} <= kinds
    assert any(e["type"] == "transcript" and not e["is_final"] for e in events), "interim results too"
    finals = " ".join(e["text"] for e in events if e["type"] == "transcript" and e["is_final"])
    assert {"young", "man"} <= set(words(finals))
    assert events[-1] == {"type": "session_end", "seconds_used": len(pcm) / 32_000}


def test_a_bad_key_exits_non_zero_with_a_one_line_reason(keyed: RunningServer) -> None:
    Admin(keyed).create_key()
    done = listen("--file", str(shared_audio(CLIP)), "--server", keyed.base_url, "--key", "es_000000000000_x")
    assert done.returncode == 3 and done.stdout == b""
    reason = done.stderr.decode()
    assert reason.count("\n") == 1 and reason.startswith("error: AUTH_FAILED")
    assert "Traceback" not in reason


def test_an_unreachable_server_or_a_bad_source_exits_non_zero_with_one_line() -> None:
    done = listen("--file", str(shared_audio(CLIP)), "--server", "http://127.0.0.1:9", "--key", "k")
    assert done.returncode == 1
    assert done.stderr.decode().count("\n") == 1 and "can't connect" in done.stderr.decode()
    done = listen("--server", "http://127.0.0.1:9")
    assert done.returncode == 2 and b"exactly one of --file, --mic or --stdin" in done.stderr
    done = listen("--byok", "--stdin")
    assert done.returncode == 2 and b"--deepgram-key" in done.stderr


def test_mic_without_sounddevice_exits_with_a_one_line_reason(tmp_path: Path) -> None:
    (tmp_path / "sounddevice.py").write_text("raise ImportError('no sounddevice here')\n")
    done = listen("--mic", "--server", "http://127.0.0.1:9", PYTHONPATH=str(tmp_path))
    assert done.returncode == 2 and done.stdout == b""
    assert (
        done.stderr.decode()
        == "error: microphone capture needs sounddevice and PortAudio: pip install 'earshot[mic]'\n"
    )
