"""Sessions on the default server, on SQLite and PostgreSQL: push-to-talk with the embedded Whisper model on
real speech, and a turn refused plainly when the catalog has no chat model."""

from __future__ import annotations

import httpx

from tests.conftest import RunningServer, shared_audio

CLIP = "pocketsphinx-testdata/goforward.wav"


def test_push_to_talk_transcribes_real_speech_with_the_default_model(server: RunningServer) -> None:
    created = httpx.post(f"{server.base_url}/v1/sessions", json={"end_user": "user-1"}, timeout=30)
    assert created.status_code == 201, created.text
    session = created.json()
    assert session["chat_model"] is None and session["state"] == "active"
    clip = shared_audio(CLIP).read_bytes()
    answer = httpx.post(
        f"{server.base_url}/v1/sessions/{session['id']}/transcribe",
        files={"file": ("goforward.wav", clip, "audio/wav")},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"text": "Go forward 10 meters.", "model": "whisper-tiny.en", "duration": 2.786}


def test_a_turn_without_a_chat_model_is_refused_before_anything_is_stored(server: RunningServer) -> None:
    session = httpx.post(f"{server.base_url}/v1/sessions", json={}, timeout=30).json()
    refused = httpx.post(
        f"{server.base_url}/v1/sessions/{session['id']}/messages", json={"content": "hello"}, timeout=30
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "no_chat_model"
    assert httpx.get(f"{server.base_url}/v1/sessions/{session['id']}", timeout=30).json()["items"] == []
    unknown = httpx.post(f"{server.base_url}/v1/sessions", json={"chat_model": "gpt-4o"}, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
