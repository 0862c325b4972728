"""The default posture: anonymous on loopback until a key exists, refused on a public bind, CORS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai

from tests.conftest import (
    free_port,
    shared_audio,
    sqlite_url,
    start_server,
    stop_server,
    transcribe_request,
    wait_until,
)


def test_a_fresh_loopback_server_is_anonymous_until_the_first_key(tmp_path: Path, short_wav: bytes) -> None:
    server = start_server(tmp_path, {"EARSHOT_CORS_ORIGINS": "https://app.example"})
    try:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="anything", max_retries=0)
        with shared_audio("pocketsphinx-testdata/goforward.wav").open("rb") as f:
            assert (
                client.audio.transcriptions.create(model="whisper-1", file=f).text == "Go forward 10 meters."
            )
        assert transcribe_request(server, short_wav, None).status_code == 200

        env = {**os.environ, "EARSHOT_DATABASE_URL": sqlite_url(tmp_path)}
        created = subprocess.run(
            [sys.executable, "-m", "earshot", "keys", "create", "--name", "first"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        key = created.stdout.strip()
        wait_until(lambda: transcribe_request(server, short_wav, None).status_code == 401, 1.5)
        assert transcribe_request(server, short_wav, key).status_code == 200

        preflight = httpx.options(
            f"{server.base_url}/v1/audio/transcriptions",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        other = httpx.options(
            f"{server.base_url}/v1/audio/transcriptions",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers
    finally:
        stop_server(server)
    log = server.log_text()
    assert log.count("serving requests anonymously") == 1
    assert key not in log


def test_a_public_bind_without_keys_refuses_to_start(tmp_path: Path) -> None:
    env = {**os.environ, "EARSHOT_DATABASE_URL": sqlite_url(tmp_path)}
    refused = subprocess.run(
        [sys.executable, "-m", "earshot", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "--allow-anonymous" in refused.stderr and "earshot keys create" in refused.stderr


def test_a_public_bind_serves_anonymously_when_allowed(tmp_path: Path, short_wav: bytes) -> None:
    server = start_server(tmp_path, {"EARSHOT_HOST": "0.0.0.0"}, "--allow-anonymous")
    try:
        assert transcribe_request(server, short_wav, None).status_code == 200
    finally:
        stop_server(server)
