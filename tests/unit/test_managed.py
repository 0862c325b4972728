"""The managed protocol (WS /ws/transcribe) without a server: every message in and out, and bad input."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from earshot.api.live.actions import Action, AppendAudio, CloseSocket, Commit, EndStream, Send
from earshot.api.managed import wire
from earshot.api.managed.protocol import ManagedProtocol
from earshot.streaming.events import Closed, Error, Final, Partial, SpeechStarted, UtteranceEnd, Word
from earshot.streaming.live_config import LiveConfig


def protocol(**config: Any) -> ManagedProtocol:
    return ManagedProtocol(wire.StreamConfig(**config), "pocketsphinx", LiveConfig(idle_timeout_s=7.0))


def sent(actions: list[Action]) -> list[dict[str, Any]]:
    return [json.loads(a.message) for a in actions if isinstance(a, Send) and isinstance(a.message, str)]


def closes(actions: list[Action]) -> list[int]:
    return [a.code for a in actions if isinstance(a, CloseSocket)]


# --- the first message ---


def test_auth_carries_the_key_and_config() -> None:
    auth = wire.parse_auth(
        json.dumps(
            {
                "type": "auth",
                "token": "es_abc_def",
                "config": {"model": "pocketsphinx", "language": "en", "sample_rate": 8000, "channels": 2},
            }
        )
    )
    assert auth.token == "es_abc_def"
    assert (auth.config.model, auth.config.language) == ("pocketsphinx", "en")
    assert (auth.config.sample_rate, auth.config.channels, auth.config.interim_results) == (8000, 2, True)


def test_auth_config_defaults_to_16_khz_mono_with_interim_results() -> None:
    config = wire.parse_auth('{"type": "auth", "token": "k"}').config
    assert (config.sample_rate, config.channels, config.encoding, config.interim_results) == (
        16000,
        1,
        "linear16",
        True,
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"type": "hello"}', "first message must be"),
        ('{"type": "auth", "token": 5}', "invalid token"),
        ('{"type": "auth", "config": {"sample_rate": 100}}', "invalid config.sample_rate"),
        ('{"type": "auth", "config": {"encoding": "mulaw"}}', "invalid config.encoding"),
        ('{"type": "auth", "config": {"channels": 0}}', "invalid config.channels"),
        ('{"type": "auth", "config": {"language": "english please"}}', "invalid config.language"),
        ('{"type": "auth", "config": {"samplerate": 16000}}', "invalid config.samplerate"),
    ],
)
def test_a_bad_first_message_is_a_bad_request(text: str, says: str) -> None:
    with pytest.raises(wire.WireError) as refused:
        wire.parse_auth(text)
    assert refused.value.code == "BAD_REQUEST"
    assert says in refused.value.message
    actions = ManagedProtocol.refused(refused.value)
    assert sent(actions) == [{"type": "error", "code": "BAD_REQUEST", "message": refused.value.message}]
    assert closes(actions) == [4400]


@pytest.mark.parametrize(
    ("refusal", "code"),
    [
        ("invalid_api_key", "AUTH_FAILED"),
        ("model_not_allowed", "MODEL_NOT_ALLOWED"),
        ("insufficient_quota", "INSUFFICIENT_CREDITS"),
        ("rate_limit_exceeded", "RATE_LIMITED"),
        ("concurrency_limit_exceeded", "RATE_LIMITED"),
        ("model_not_found", "BAD_REQUEST"),
    ],
)
def test_refusals_before_ready_get_the_managed_error_code(refusal: str, code: str) -> None:
    actions = ManagedProtocol.refusal(refusal, "why")
    assert sent(actions) == [{"type": "error", "code": code, "message": "why"}]
    assert closes(actions) == [4400 if code == "BAD_REQUEST" else 1008]


# --- the session ---


def test_ready_names_the_session_and_model() -> None:
    (ready,) = sent(protocol().opened())
    assert ready["type"] == "ready" and ready["model"] == "pocketsphinx"
    assert ready["session_id"].startswith("sess_")


def test_live_config_follows_the_client_and_the_server_limits() -> None:
    managed = protocol(sample_rate=8000, language="en", interim_results=False)
    config = managed.live_config()
    assert (config.input_rate_hz, config.idle_timeout_s) == (8000, 7.0) and config.vad is not None
    options = managed.transcribe_options()
    assert (options.language, options.interim_results) == ("en", False)


def test_binary_frames_are_audio_and_a_split_sample_waits_for_its_other_half() -> None:
    managed = protocol()
    assert managed.receive_bytes(b"\x01\x00\x02") == [AppendAudio(b"\x01\x00")]
    assert managed.receive_bytes(b"\x00") == [AppendAudio(b"\x02\x00")]
    assert managed.receive_bytes(b"") == []
    assert managed.seconds_used == 2 / 16000


def test_stereo_is_mixed_down_to_mono() -> None:
    managed = protocol(channels=2)
    frames = struct.pack("<4h", 1000, 3000, -2000, -4000)
    assert managed.receive_bytes(frames) == [AppendAudio(struct.pack("<2h", 2000, -3000))]
    assert managed.seconds_used == 2 / 16000


def test_controls_keepalive_finalize_and_close() -> None:
    managed = protocol()
    assert managed.receive_text('{"type": "keepalive"}') == []
    assert managed.receive_text('{"type": "finalize"}') == [], "nothing to flush yet"
    managed.receive_bytes(b"\x00\x00" * 160)
    assert managed.receive_text('{"type": "finalize"}') == [Commit()]
    assert managed.receive_text('{"type": "finalize"}') == []
    assert managed.receive_text('{"type": "close"}') == [EndStream()]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{", "not valid JSON"),
        ('"close"', "JSON object"),
        ('{"type": "dance"}', "unknown message type dance"),
        ('{"kind": "close"}', "unknown message type None"),
        ('{"type": "auth", "token": "again"}', "already authenticated"),
    ],
)
def test_a_bad_text_frame_gets_a_bad_request_and_the_session_goes_on(text: str, says: str) -> None:
    actions = protocol().receive_text(text)
    (error,) = sent(actions)
    assert error["type"] == "error" and error["code"] == "BAD_REQUEST" and says in error["message"]
    assert closes(actions) == []


def test_partials_are_interim_transcripts_and_finals_are_final() -> None:
    managed = protocol()
    assert sent(managed.on_event(Partial("hello wor", 0.5, 1.25))) == [
        {"type": "transcript", "text": "hello wor", "is_final": False, "start": 0.5, "end": 1.25}
    ]
    final = Final("hello world", 0.5, 1.5, (Word("hello", 0.5, 1.0), Word("world", 1.0, 1.5)))
    assert sent(managed.on_event(final)) == [
        {"type": "transcript", "text": "hello world", "is_final": True, "start": 0.5, "end": 1.5}
    ]
    assert sent(managed.on_event(UtteranceEnd(1.75))) == [{"type": "utterance_end", "end": 1.75}]
    assert managed.on_event(Final("", 1.5, 1.5)) == []
    assert managed.on_event(SpeechStarted(0.4)) == [] and managed.on_event(Closed()) == []


def test_without_interim_results_only_finals_are_sent() -> None:
    managed = protocol(interim_results=False)
    assert managed.on_event(Partial("hello", 0.0, 0.5)) == []
    assert len(sent(managed.on_event(Final("hello", 0.0, 0.5)))) == 1


def test_an_engine_failure_is_an_upstream_error_without_internals() -> None:
    (error,) = sent(protocol().on_event(Error("engine_error", "worker 3 crashed at /opt/engine.so")))
    assert error["code"] == "UPSTREAM_ERROR" and "/opt" not in error["message"]


def test_credits_low_says_how_many_seconds_are_left() -> None:
    assert sent(protocol().credits_low(41.5)) == [{"type": "credits_low", "seconds_remaining": 41.5}]


def test_a_finished_stream_ends_with_session_end_and_a_normal_close() -> None:
    managed = protocol(sample_rate=8000)
    managed.receive_bytes(b"\x00\x00" * 12000)
    actions = managed.ending("finished", "the client has no more audio")
    assert sent(actions) == [{"type": "session_end", "seconds_used": 1.5}]
    assert closes(actions) == [1000]


@pytest.mark.parametrize(
    ("reason", "code", "close"),
    [
        ("insufficient_credits", "INSUFFICIENT_CREDITS", 1008),
        ("revoked", "AUTH_FAILED", 1008),
        ("idle_timeout", "IDLE_TIMEOUT", 1000),
        ("max_duration", "SESSION_EXPIRED", 1000),
        ("shutdown", "SERVER_SHUTDOWN", 1012),
        ("error", "UPSTREAM_ERROR", 1011),
    ],
)
def test_the_server_ending_a_session_says_why_then_session_end(reason: Any, code: str, close: int) -> None:
    managed = protocol()
    managed.receive_bytes(b"\x00\x00" * 8000)
    actions = managed.ending(reason, "because")
    assert sent(actions) == [
        {"type": "error", "code": code, "message": "because"},
        {"type": "session_end", "seconds_used": 0.5},
    ]
    assert closes(actions) == [close]
