"""Every sans-I/O protocol class, fed any sequence of client messages and session events, gives actions.

Hostile JSON, binary garbage and odd event orders give the protocol's errors, never an exception.
"""

from __future__ import annotations

import json
from typing import Any, get_args

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from earshot.api.deepgram.params import ListenParams
from earshot.api.deepgram.protocol import DeepgramLiveProtocol
from earshot.api.deepgram.results import ModelInfo
from earshot.api.live.actions import EndReason, ModelRefused
from earshot.api.managed import wire
from earshot.api.managed.protocol import ManagedProtocol
from earshot.api.realtime.protocol import RealtimeProtocol
from earshot.api.realtime.relay import RealtimeRelay
from earshot.api.realtime.session import RealtimeSettings
from earshot.engines.realtime_upstream import RealtimeTarget
from earshot.streaming.events import Error, Final, Partial, SpeechStarted, SpeechStopped, UtteranceEnd, Word
from earshot.streaming.live_config import LiveConfig

REALTIME_TYPES = [
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.delete",
    "response.create",
]
DEEPGRAM_TYPES = ["KeepAlive", "Finalize", "CloseStream", "Configure"]
MANAGED_TYPES = ["auth", "config", "commit", "clear", "finalize", "end", "close", "keepalive", "ping"]
FIELD_NAMES = [
    "type",
    "session",
    "audio",
    "event_id",
    "item_id",
    "input",
    "turn_detection",
    "format",
    "model",
]
LIMITS = LiveConfig(idle_timeout_s=10.0, max_duration_s=60.0)

# Scalars a hostile client sends: huge and negative integers, odd floats, long and odd strings.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["pcm16", "g711_ulaw", "server_vad", "semantic_vad", "whisper-1", "", "AAAA", "%%%"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.sampled_from(FIELD_NAMES), children, max_size=4)
    ),
    max_leaves=12,
)


def messages(types: list[str]) -> st.SearchStrategy[str]:
    """Client text frames: objects with a known or unknown type and any fields, or not JSON at all."""
    objects = st.builds(
        lambda kind, fields: json.dumps({"type": kind, **fields}),
        st.one_of(st.sampled_from(types), st.text(max_size=10)),
        st.dictionaries(st.sampled_from(FIELD_NAMES[1:]), json_values, max_size=4),
    )
    hostile = st.sampled_from(
        [
            '{"type": "session.update", "session": {"x": ' + "9" * 5000 + "}}",
            "[" * 5000 + "]" * 5000,
            '{"type": NaN}',
            '{"type": "Finalize", "x": Infinity}',
            "",
            "null",
            "\udcff",
        ]
    )
    return st.one_of(objects, hostile, st.text(max_size=30))


session_events = st.one_of(
    st.builds(SpeechStarted, st.floats(0, 100)),
    st.builds(SpeechStopped, st.floats(0, 100)),
    st.builds(Partial, st.text(max_size=20), st.floats(0, 100), st.floats(0, 100)),
    st.builds(
        Final,
        st.text(max_size=20),
        st.floats(0, 100),
        st.floats(0, 100),
        st.lists(st.builds(Word, st.text(max_size=8), st.floats(0, 100), st.floats(0, 100)), max_size=3).map(
            tuple
        ),
    ),
    st.builds(UtteranceEnd, st.floats(0, 100)),
    st.builds(Error, st.sampled_from(["transcription_failed", "upstream_error"]), st.text(max_size=20)),
)


def steps(types: list[str]) -> st.SearchStrategy[list[tuple[str, Any]]]:
    return st.lists(
        st.one_of(
            st.tuples(st.just("text"), messages(types)),
            st.tuples(st.just("bytes"), st.binary(max_size=64)),
            st.tuples(st.just("event"), session_events),
        ),
        max_size=12,
    )


def drive(protocol: Any, script: list[tuple[str, Any]], reason: EndReason) -> None:
    assert isinstance(protocol.opened(), list)
    for kind, value in script:
        if kind == "text":
            answer = protocol.receive_text(value)
        elif kind == "bytes":
            answer = protocol.receive_bytes(value)
        else:
            answer = protocol.on_event(value)
        assert isinstance(answer, list)
    assert isinstance(protocol.ending(reason, "the session ends"), list)


def resolve(requested: str) -> str:
    if requested not in ("whisper-1", "gpt-4o-transcribe"):
        raise ModelRefused("model_not_found", f"the model {requested!r} does not exist")
    return "pocketsphinx"


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
reasons = st.sampled_from(get_args(EndReason))


@FUZZ
@given(script=steps(REALTIME_TYPES), dialect=st.sampled_from(["ga", "beta"]), reason=reasons)
def test_the_realtime_protocol_answers_anything(
    script: list[tuple[str, Any]], dialect: Any, reason: Any
) -> None:
    settings_ = RealtimeSettings(id="sess_fuzz", model="whisper-1")
    drive(RealtimeProtocol(settings_, dialect, resolve, LIMITS), script, reason)


@FUZZ
@given(
    script=steps(DEEPGRAM_TYPES),
    encoding=st.sampled_from([None, "linear16", "mulaw", "alaw"]),
    reason=reasons,
)
def test_the_deepgram_live_protocol_answers_anything(
    script: list[tuple[str, Any]], encoding: str | None, reason: Any
) -> None:
    query = {"encoding": encoding, "sample_rate": "16000"} if encoding else {}
    params = ListenParams.from_query(query, {name: [value] for name, value in query.items()})
    drive(
        DeepgramLiveProtocol(params, ModelInfo("pocketsphinx", "pocketsphinx"), LIMITS, "req"), script, reason
    )


@FUZZ
@given(script=steps(MANAGED_TYPES), channels=st.integers(1, 2), reason=reasons)
def test_the_managed_protocol_answers_anything(
    script: list[tuple[str, Any]], channels: int, reason: Any
) -> None:
    drive(ManagedProtocol(wire.StreamConfig(channels=channels), "pocketsphinx", LIMITS), script, reason)


@FUZZ
@given(script=st.lists(st.tuples(st.booleans(), messages(REALTIME_TYPES)), max_size=12))
def test_the_realtime_relay_answers_anything_from_either_side(script: list[tuple[bool, str]]) -> None:
    target = RealtimeTarget(
        "openai", "wss://upstream.invalid/v1/realtime", {}, "ga", "gpt-4o-transcribe", 5, 5
    )
    relay = RealtimeRelay(
        RealtimeSettings(id="sess_fuzz", model="relayed"), "ga", target, "relayed", resolve, resolve
    )
    assert isinstance(relay.upstream_opened(), list)
    for from_client, text in script:
        answer = relay.from_client(text) if from_client else relay.from_upstream(text)
        assert isinstance(answer, list)
    assert isinstance(relay.from_client_bytes(), list)


@FUZZ
@given(text=messages(MANAGED_TYPES))
def test_the_managed_auth_message_is_parsed_or_refused(text: str) -> None:
    try:
        wire.parse_auth(text)
    except wire.WireError as e:
        assert e.code in get_args(wire.ErrorCode)
