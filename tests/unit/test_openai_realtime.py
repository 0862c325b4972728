"""The OpenAI Realtime transcription protocol, no server: client and session events in, actions out."""

from __future__ import annotations

import base64
import json
import math
import warnings
from typing import Any

import numpy as np
import pytest

from earshot.api.live.actions import (
    Action,
    AppendAudio,
    Clear,
    CloseSocket,
    Commit,
    Configure,
    EndReason,
    ModelRefused,
    Send,
)
from earshot.api.realtime.protocol import RealtimeProtocol
from earshot.api.realtime.session import Dialect, RealtimeSettings
from earshot.audio.pcm import float_to_pcm16
from earshot.audio.vad import VadParams
from earshot.streaming.events import Error, Final, SpeechStarted, SpeechStopped, UtteranceEnd
from earshot.streaming.live_config import LiveConfig

SESSION_ID = "sess_test"
SERVER_LIMITS = LiveConfig(idle_timeout_s=7.0, max_duration_s=600.0)
# Requested model name -> canonical model id, as the gateway's model chooser would resolve them.
MODELS = {"whisper-1": "pocketsphinx-en", "gpt-4o-transcribe": "pocketsphinx-en", "big": "whisper-large"}
EVERY_G711_CODE = bytes(range(256))


class Models:
    """A `resolve_model` that knows MODELS, refuses the rest, and remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, requested: str) -> str:
        self.asked.append(requested)
        if requested not in MODELS:
            raise ModelRefused("model_not_found", f"the model {requested!r} does not exist")
        return MODELS[requested]


def new_protocol(dialect: Dialect = "ga", models: Models | None = None) -> RealtimeProtocol:
    """A fresh session for `whisper-1` with server VAD, as a client finds it on connect."""
    settings = RealtimeSettings(id=SESSION_ID, model="whisper-1")
    return RealtimeProtocol(settings, dialect, models or Models(), SERVER_LIMITS)


def event(kind: str, **fields: Any) -> str:
    """A client event as JSON text."""
    return json.dumps({"type": kind, **fields})


def update_event(dialect: Dialect, session: dict[str, Any], **fields: Any) -> str:
    """`transcription_session.update` (beta) or `session.update` (GA) with this session object."""
    if dialect == "beta":
        return event("transcription_session.update", session=session, **fields)
    return event("session.update", session={"type": "transcription", **session}, **fields)


def ga_input(**input_fields: Any) -> dict[str, Any]:
    """A GA session object that sets these `audio.input` fields."""
    return {"audio": {"input": input_fields}}


def manual_protocol(dialect: Dialect = "ga") -> RealtimeProtocol:
    """A session whose client turned server VAD off (`turn_detection: null`) and commits by itself."""
    protocol = new_protocol(dialect)
    session = {"turn_detection": None} if dialect == "beta" else ga_input(turn_detection=None)
    protocol.receive_text(update_event(dialect, session))
    assert protocol.live_config().vad is None
    return protocol


def messages(actions: list[Action]) -> list[dict[str, Any]]:
    """The JSON server events among these actions, parsed."""
    return [json.loads(action.message) for action in actions if isinstance(action, Send)]


def kinds(actions: list[Action]) -> list[str]:
    """The server event types among these actions, in order."""
    return [message["type"] for message in messages(actions)]


def the_error(actions: list[Action]) -> dict[str, Any]:
    """The `error` object of the only action, which must be an `error` event."""
    assert len(actions) == 1, actions
    [message] = messages(actions)
    assert message["type"] == "error"
    error: dict[str, Any] = message["error"]
    assert error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str) and error["message"]
    return error


def tone(ms: int, rate_hz: int = 24_000) -> bytes:
    """`ms` of a 440 Hz tone as PCM16 at `rate_hz`."""
    t = np.arange(rate_hz * ms // 1000) / rate_hz
    return float_to_pcm16((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))


def append(protocol: RealtimeProtocol, audio: bytes, event_id: str | None = None) -> list[Action]:
    """Send `input_audio_buffer.append` with these bytes, base64-encoded."""
    fields: dict[str, Any] = {"audio": base64.b64encode(audio).decode()}
    if event_id is not None:
        fields["event_id"] = event_id
    return protocol.receive_text(event("input_audio_buffer.append", **fields))


def assert_append_works(protocol: RealtimeProtocol) -> None:
    """The session still takes audio."""
    audio = tone(20)
    assert append(protocol, audio) == [AppendAudio(audio)]


def g711(codes: bytes, law: str) -> bytes:
    """The reference decoding of G.711 bytes to PCM16 (the stdlib's, deprecated but exact)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # gone in Python 3.13
    decoded: bytes = audioop.ulaw2lin(codes, 2) if law == "ulaw" else audioop.alaw2lin(codes, 2)
    return decoded


def configure_of(actions: list[Action]) -> Configure:
    """The one Configure among these actions."""
    [configure] = [action for action in actions if isinstance(action, Configure)]
    return configure


# --- connect ---


def test_ga_session_created_on_connect_shows_the_ga_session() -> None:
    [created] = messages(new_protocol("ga").opened())
    assert created["type"] == "session.created"
    assert created["event_id"].startswith("event_")
    session = created["session"]
    assert session["type"] == "transcription" and session["id"] == SESSION_ID
    audio_input = session["audio"]["input"]
    assert audio_input["format"] == {"type": "audio/pcm", "rate": 24_000}
    assert audio_input["transcription"]["model"] == "whisper-1"
    assert audio_input["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
    }
    assert "input_audio_format" not in session


def test_beta_transcription_session_created_on_connect_shows_the_beta_session() -> None:
    [created] = messages(new_protocol("beta").opened())
    assert created["type"] == "transcription_session.created"
    session = created["session"]
    assert session["id"] == SESSION_ID
    assert session["object"] == "realtime.transcription_session"
    assert session["input_audio_format"] == "pcm16"
    assert session["input_audio_transcription"]["model"] == "whisper-1"
    assert session["turn_detection"]["type"] == "server_vad"
    assert session["turn_detection"]["silence_duration_ms"] == 500
    assert "audio" not in session


def test_the_model_is_resolved_once_on_connect_and_the_server_limits_apply_but_no_idle_timeout() -> None:
    models = Models()
    protocol = new_protocol(models=models)
    assert models.asked == ["whisper-1"]
    assert protocol.model_id == "pocketsphinx-en"
    config = protocol.live_config()
    assert config.input_rate_hz == 24_000 and config.vad == VadParams()
    # A quiet Realtime session stays open until its maximum duration, as OpenAI's does.
    assert (config.idle_timeout_s, config.max_duration_s) == (math.inf, 600.0)
    assert protocol.transcribe_options().interim_results is False


# --- input_audio_buffer.append ---


def test_pcm16_audio_is_appended_as_sent_and_nothing_is_answered() -> None:
    audio = tone(100)
    assert append(new_protocol(), audio, event_id="evt_1") == [AppendAudio(audio)]


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_beta_g711_audio_is_decoded_to_pcm16_at_8_khz(law: str) -> None:
    protocol = new_protocol("beta")
    actions = protocol.receive_text(update_event("beta", {"input_audio_format": f"g711_{law}"}))
    assert configure_of(actions).config.input_rate_hz == 8_000
    assert messages(actions)[0]["session"]["input_audio_format"] == f"g711_{law}"
    assert append(protocol, EVERY_G711_CODE) == [AppendAudio(g711(EVERY_G711_CODE, law))]
    assert protocol.live_config().input_rate_hz == 8_000


@pytest.mark.parametrize(("format_type", "law"), [("audio/pcmu", "ulaw"), ("audio/pcma", "alaw")])
def test_ga_g711_audio_is_decoded_to_pcm16_at_8_khz(format_type: str, law: str) -> None:
    protocol = new_protocol("ga")
    actions = protocol.receive_text(update_event("ga", ga_input(format={"type": format_type})))
    assert messages(actions)[0]["session"]["audio"]["input"]["format"] == {"type": format_type}
    assert append(protocol, EVERY_G711_CODE) == [AppendAudio(g711(EVERY_G711_CODE, law))]
    assert protocol.live_config().input_rate_hz == 8_000


def test_ga_pcm_at_a_custom_rate_sets_the_input_rate() -> None:
    protocol = new_protocol("ga")
    actions = protocol.receive_text(
        update_event("ga", ga_input(format={"type": "audio/pcm", "rate": 16_000}))
    )
    assert configure_of(actions).config.input_rate_hz == 16_000
    assert protocol.live_config().input_rate_hz == 16_000
    assert messages(actions)[-1]["session"]["audio"]["input"]["format"] == {
        "type": "audio/pcm",
        "rate": 16_000,
    }
    # Back to audio/pcm without a rate: OpenAI's 24 kHz.
    protocol.receive_text(update_event("ga", ga_input(format={"type": "audio/pcm"})))
    assert protocol.live_config().input_rate_hz == 24_000


def test_the_100_ms_commit_minimum_is_measured_at_the_input_rate() -> None:
    protocol = manual_protocol("beta")
    protocol.receive_text(update_event("beta", {"input_audio_format": "g711_ulaw"}))
    append(protocol, bytes(799))  # 99.875 ms at 8 kHz
    assert the_error(protocol.receive_text(event("input_audio_buffer.commit")))["code"] == (
        "input_audio_buffer_commit_empty"
    )
    append(protocol, bytes(1))
    assert protocol.receive_text(event("input_audio_buffer.commit"))[0] == Commit()


# --- input_audio_buffer.commit / clear ---


def test_ga_commit_answers_committed_and_conversation_item_added_chained_by_previous_item_id() -> None:
    protocol = manual_protocol("ga")
    append(protocol, tone(100))
    first = protocol.receive_text(event("input_audio_buffer.commit", event_id="evt_c1"))
    assert first[0] == Commit()
    committed, added = messages(first)
    assert committed["type"] == "input_audio_buffer.committed"
    assert committed["previous_item_id"] is None and committed["item_id"].startswith("item_")
    assert added["type"] == "conversation.item.added"
    assert added["previous_item_id"] is None
    item = added["item"]
    assert item["id"] == committed["item_id"]
    assert (item["type"], item["role"]) == ("message", "user")
    assert item["content"][0]["type"] == "input_audio"

    append(protocol, tone(150))
    committed_2, added_2 = messages(protocol.receive_text(event("input_audio_buffer.commit")))
    assert committed_2["previous_item_id"] == committed["item_id"] != committed_2["item_id"]
    assert added_2["previous_item_id"] == committed["item_id"]
    assert added_2["item"]["id"] == committed_2["item_id"]


def test_beta_commit_answers_conversation_item_created() -> None:
    protocol = manual_protocol("beta")
    append(protocol, tone(100))
    actions = protocol.receive_text(event("input_audio_buffer.commit"))
    assert actions[0] == Commit()
    assert kinds(actions) == ["input_audio_buffer.committed", "conversation.item.created"]
    committed, created = messages(actions)
    assert created["item"]["id"] == committed["item_id"]


def test_committed_item_gets_its_transcript_and_the_committed_duration() -> None:
    protocol = manual_protocol("ga")
    append(protocol, tone(300))
    append(protocol, tone(200))
    committed, _ = messages(protocol.receive_text(event("input_audio_buffer.commit")))
    [delta] = messages(protocol.on_event(Final("hello there", 0.0, 0.5)))
    [completed] = messages(protocol.on_event(UtteranceEnd(0.5)))
    assert delta["item_id"] == completed["item_id"] == committed["item_id"]
    assert completed["transcript"] == "hello there"
    assert completed["usage"] == {"type": "duration", "seconds": 0.5}


def test_clear_answers_cleared_and_forgets_the_uncommitted_audio() -> None:
    protocol = manual_protocol("ga")
    append(protocol, tone(400))
    actions = protocol.receive_text(event("input_audio_buffer.clear"))
    assert actions[0] == Clear()
    assert kinds(actions) == ["input_audio_buffer.cleared"]
    # Nothing is left to commit.
    assert the_error(protocol.receive_text(event("input_audio_buffer.commit")))["code"] == (
        "input_audio_buffer_commit_empty"
    )
    # The next utterance is an item of its own, with only its own audio.
    append(protocol, tone(300))
    committed, _ = messages(protocol.receive_text(event("input_audio_buffer.commit")))
    protocol.on_event(Final("kept", 0.4, 0.7))
    [completed] = messages(protocol.on_event(UtteranceEnd(0.7)))
    assert completed["item_id"] == committed["item_id"]
    assert completed["transcript"] == "kept"
    assert completed["usage"]["seconds"] == 0.3


# --- transcription_session.update / session.update ---


def test_beta_update_configures_the_session_and_echoes_the_new_settings() -> None:
    protocol = new_protocol("beta")
    session = {
        "input_audio_transcription": {"language": "de", "prompt": "Fachbegriffe"},
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.7,
            "prefix_padding_ms": 200,
            "silence_duration_ms": 800,
        },
        "include": ["item.input_audio_transcription.logprobs"],
    }
    actions = protocol.receive_text(update_event("beta", session, event_id="evt_u"))
    configure = configure_of(actions)
    assert configure.model == "pocketsphinx-en"
    assert configure.config.vad == VadParams(threshold=0.7, prefix_padding_ms=200, silence_duration_ms=800)
    assert (configure.options.language, configure.options.prompt) == ("de", "Fachbegriffe")
    assert kinds(actions) == ["transcription_session.updated"]
    echoed = messages(actions)[0]["session"]
    assert echoed["input_audio_transcription"] == {
        "model": "whisper-1",
        "language": "de",
        "prompt": "Fachbegriffe",
    }
    assert echoed["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.7,
        "prefix_padding_ms": 200,
        "silence_duration_ms": 800,
    }
    assert echoed["include"] == ["item.input_audio_transcription.logprobs"]


def test_ga_update_configures_the_session_and_echoes_the_new_settings() -> None:
    protocol = new_protocol("ga")
    session = ga_input(
        format={"type": "audio/pcm", "rate": 24_000},
        transcription={"language": "en", "prompt": "earshot"},
        turn_detection={"type": "server_vad", "threshold": 0.3, "silence_duration_ms": 1000},
    )
    actions = protocol.receive_text(update_event("ga", session))
    configure = configure_of(actions)
    assert configure.config.vad == VadParams(threshold=0.3, prefix_padding_ms=300, silence_duration_ms=1000)
    assert configure.options.language == "en" and configure.options.prompt == "earshot"
    assert kinds(actions) == ["session.updated"]
    echoed = messages(actions)[0]["session"]["audio"]["input"]
    assert echoed["transcription"] == {"model": "whisper-1", "language": "en", "prompt": "earshot"}
    assert echoed["turn_detection"]["threshold"] == 0.3
    assert echoed["turn_detection"]["silence_duration_ms"] == 1000


@pytest.mark.parametrize("dialect", ["beta", "ga"])
def test_turn_detection_null_switches_to_manual_commits(dialect: Dialect) -> None:
    protocol = new_protocol(dialect)
    session = {"turn_detection": None} if dialect == "beta" else ga_input(turn_detection=None)
    actions = protocol.receive_text(update_event(dialect, session))
    assert configure_of(actions).config.vad is None
    assert protocol.live_config().vad is None
    echoed = messages(actions)[0]["session"]
    turn_detection = (
        echoed["turn_detection"] if dialect == "beta" else echoed["audio"]["input"]["turn_detection"]
    )
    assert turn_detection is None


def test_an_update_without_turn_detection_keeps_the_current_one() -> None:
    protocol = manual_protocol("ga")
    protocol.receive_text(update_event("ga", ga_input(transcription={"language": "fr"})))
    assert protocol.live_config().vad is None
    assert protocol.transcribe_options().language == "fr"


def test_semantic_vad_is_accepted_and_its_eagerness_sets_how_soon_a_turn_ends() -> None:
    def silence_ms(eagerness: str) -> int:
        protocol = new_protocol("ga")
        detection = {"type": "semantic_vad", "eagerness": eagerness}
        actions = protocol.receive_text(update_event("ga", ga_input(turn_detection=detection)))
        assert messages(actions)[0]["session"]["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
        vad = configure_of(actions).config.vad
        assert vad is not None
        return vad.silence_duration_ms

    assert silence_ms("high") < silence_ms("medium") < silence_ms("low")


def test_a_model_change_before_audio_is_resolved_and_configured() -> None:
    models = Models()
    protocol = new_protocol("ga", models)
    actions = protocol.receive_text(update_event("ga", ga_input(transcription={"model": "big"})))
    assert models.asked == ["whisper-1", "big"]
    assert configure_of(actions).model == "whisper-large"
    assert messages(actions)[0]["session"]["audio"]["input"]["transcription"]["model"] == "big"


def test_a_refused_model_is_an_error_with_its_code_and_changes_nothing() -> None:
    protocol = new_protocol("beta")
    session = {"input_audio_transcription": {"model": "nope", "language": "de"}}
    error = the_error(protocol.receive_text(update_event("beta", session, event_id="evt_m")))
    assert error["code"] == "model_not_found"
    assert error["event_id"] == "evt_m"
    assert "nope" in error["message"]
    assert protocol.model_id == "pocketsphinx-en"
    assert protocol.transcribe_options().language is None
    assert_append_works(protocol)


def test_a_model_the_resolver_refuses_after_audio_keeps_the_old_model() -> None:
    models = Models()
    protocol = new_protocol("ga", models)
    append(protocol, tone(20))

    def locked(requested: str) -> str:
        raise ModelRefused(
            "model_locked", "the transcription model can't change once audio has been appended"
        )

    protocol._resolve_model = locked
    session = ga_input(transcription={"model": "big"})
    error = the_error(protocol.receive_text(update_event("ga", session, event_id="evt_late")))
    assert error["code"] == "model_locked"
    assert error["event_id"] == "evt_late"
    assert error["param"] == "session.audio.input.transcription.model"
    assert protocol.model_id == "pocketsphinx-en"
    # Naming the same model again is no change, and asks no one.
    same = protocol.receive_text(update_event("ga", ga_input(transcription={"model": "whisper-1"})))
    assert kinds(same) == ["session.updated"]


def test_a_rate_change_commits_the_audio_sent_at_the_old_rate_first() -> None:
    protocol = manual_protocol("ga")
    append(protocol, tone(200))
    actions = protocol.receive_text(
        update_event("ga", ga_input(format={"type": "audio/pcm", "rate": 16_000}))
    )
    assert actions[0] == Commit()
    assert kinds(actions) == ["input_audio_buffer.committed", "conversation.item.added", "session.updated"]
    assert configure_of(actions).config.input_rate_hz == 16_000
    assert actions.index(configure_of(actions)) > 0


# --- session events ---


def test_speech_started_announces_a_new_item_at_the_audio_start() -> None:
    protocol = new_protocol("ga")
    [started] = messages(protocol.on_event(SpeechStarted(1.234)))
    assert started["type"] == "input_audio_buffer.speech_started"
    assert started["audio_start_ms"] == 1234
    assert started["item_id"].startswith("item_")
    protocol.on_event(SpeechStopped(2.0))
    [again] = messages(protocol.on_event(SpeechStarted(3.0)))
    assert again["item_id"] != started["item_id"]


@pytest.mark.parametrize(
    ("dialect", "item_event"), [("ga", "conversation.item.added"), ("beta", "conversation.item.created")]
)
def test_speech_stopped_commits_the_turn(dialect: Dialect, item_event: str) -> None:
    protocol = new_protocol(dialect)
    [started] = messages(protocol.on_event(SpeechStarted(0.5)))
    stopped, committed, item = messages(protocol.on_event(SpeechStopped(1.75)))
    assert stopped["type"] == "input_audio_buffer.speech_stopped"
    assert stopped["audio_end_ms"] == 1750
    assert stopped["item_id"] == committed["item_id"] == item["item"]["id"] == started["item_id"]
    assert committed["type"] == "input_audio_buffer.committed"
    assert item["type"] == item_event


def test_deltas_are_append_only_and_add_up_to_the_completed_transcript() -> None:
    protocol = new_protocol("ga")
    [started] = messages(protocol.on_event(SpeechStarted(0.25)))
    actions = protocol.on_event(Final("go forward", 0.3, 1.1))
    actions += protocol.on_event(Final("", 1.1, 1.2))  # an empty Final says nothing
    actions += protocol.on_event(Final("ten meters", 1.2, 2.0))
    actions += protocol.on_event(SpeechStopped(2.25))
    actions += protocol.on_event(UtteranceEnd(2.0))
    events = messages(actions)
    deltas = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.delta"]
    [completed] = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert [d["delta"] for d in deltas] == ["go forward", " ten meters"]
    assert all(d["item_id"] == started["item_id"] and d["content_index"] == 0 for d in deltas)
    assert "".join(d["delta"] for d in deltas) == completed["transcript"] == "go forward ten meters"
    assert completed["item_id"] == started["item_id"] and completed["content_index"] == 0
    assert completed["usage"] == {"type": "duration", "seconds": 2.0}
    assert events[-1] is completed


def test_an_engine_error_fails_the_item_and_the_next_turn_still_transcribes() -> None:
    protocol = new_protocol("ga")
    [started] = messages(protocol.on_event(SpeechStarted(0.0)))
    [failed] = messages(protocol.on_event(Error("transcription_failed", "the engine crashed")))
    assert failed["type"] == "conversation.item.input_audio_transcription.failed"
    assert failed["item_id"] == started["item_id"] and failed["content_index"] == 0
    assert failed["error"]["code"] == "transcription_failed"
    assert failed["error"]["message"] == "the engine crashed"

    [next_started] = messages(protocol.on_event(SpeechStarted(2.0)))
    protocol.on_event(SpeechStopped(3.0))
    [delta] = messages(protocol.on_event(Final("still here", 2.0, 3.0)))
    [completed] = messages(protocol.on_event(UtteranceEnd(3.0)))
    assert delta["item_id"] == completed["item_id"] == next_started["item_id"]
    assert completed["transcript"] == "still here"


def test_overlapping_turns_keep_their_text_apart() -> None:
    protocol = new_protocol("ga")
    [first] = messages(protocol.on_event(SpeechStarted(0.0)))
    protocol.on_event(SpeechStopped(1.0))
    # The second turn starts before the first one's text is in.
    [second] = messages(protocol.on_event(SpeechStarted(1.2)))
    events = messages(protocol.on_event(Final("first words", 0.0, 1.0)))
    events += messages(protocol.on_event(UtteranceEnd(1.0)))
    events += messages(protocol.on_event(Final("second words", 1.2, 2.0)))
    events += messages(protocol.on_event(SpeechStopped(2.0)))
    events += messages(protocol.on_event(UtteranceEnd(2.0)))
    texts = {
        e["item_id"]: e["transcript"]
        for e in events
        if e["type"] == "conversation.item.input_audio_transcription.completed"
    }
    assert texts == {first["item_id"]: "first words", second["item_id"]: "second words"}
    deltas = [
        (e["item_id"], e["delta"])
        for e in events
        if e["type"] == "conversation.item.input_audio_transcription.delta"
    ]
    assert deltas == [(first["item_id"], "first words"), (second["item_id"], "second words")]


def test_an_engine_error_with_two_turns_pending_fails_both_and_later_text_lands_on_its_own_item() -> None:
    protocol = new_protocol("ga")
    protocol.on_event(SpeechStarted(0.0))
    protocol.on_event(SpeechStopped(1.0))
    protocol.on_event(SpeechStarted(1.2))
    failed = messages(protocol.on_event(Error("transcription_failed", "the engine crashed")))
    assert len(failed) == 2
    [third] = messages(protocol.on_event(SpeechStarted(4.0)))
    protocol.on_event(SpeechStopped(5.0))
    protocol.on_event(Final("third", 4.0, 5.0))
    [completed] = messages(protocol.on_event(UtteranceEnd(5.0)))
    assert completed["item_id"] == third["item_id"]


def test_every_server_event_has_its_own_event_id() -> None:
    protocol = new_protocol("ga")
    actions = protocol.opened()
    actions += protocol.on_event(SpeechStarted(0.0))
    actions += protocol.on_event(SpeechStopped(1.0))
    actions += protocol.on_event(Final("hi", 0.0, 1.0))
    actions += protocol.on_event(UtteranceEnd(1.0))
    event_ids = [message["event_id"] for message in messages(actions)]
    assert len(event_ids) == 7 and len(set(event_ids)) == 7


# --- bad input ---

APPEND = "input_audio_buffer.append"
BAD_TEXT_EVENTS = [
    pytest.param(
        '{"type": "input_audio_buffer.append", "audio": ', "invalid_json", None, id="malformed-json"
    ),
    pytest.param(json.dumps([{"type": APPEND}]), "invalid_event", None, id="json-array"),
    pytest.param(json.dumps("hello"), "invalid_event", None, id="json-string"),
    pytest.param(
        event("response.create", event_id="evt_1"), "unknown_event_type", "evt_1", id="unknown-type"
    ),
    pytest.param(
        json.dumps({"event_id": "evt_2", "audio": "AAAA"}), "unknown_event_type", "evt_2", id="no-type"
    ),
    pytest.param(
        event(APPEND, audio="not base64!", event_id="evt_3"), "invalid_base64", "evt_3", id="bad-b64"
    ),
    pytest.param(event(APPEND, audio="AAA", event_id="evt_4"), "invalid_base64", "evt_4", id="b64-padding"),
    pytest.param(
        event(APPEND, audio="ÀÁÂÃ", event_id="evt_5"), "invalid_base64", "evt_5", id="b64-non-ascii"
    ),
    pytest.param(event(APPEND, audio=12345, event_id="evt_6"), "invalid_type", "evt_6", id="audio-number"),
    pytest.param(event(APPEND, event_id="evt_7"), "invalid_type", "evt_7", id="audio-missing"),
    pytest.param(event(APPEND, audio="AAAA", event_id=42), "invalid_type", None, id="event-id-number"),
    pytest.param(
        event("session.update", session="x", event_id="evt_8"), "invalid_type", "evt_8", id="session-str"
    ),
    pytest.param(
        event("transcription_session.update", session=[], event_id="evt_9"),
        "invalid_type",
        "evt_9",
        id="session-list",
    ),
    pytest.param(
        update_event(
            "ga", ga_input(turn_detection={"type": "server_vad", "threshold": "high"}), event_id="evt_10"
        ),
        "invalid_value",
        "evt_10",
        id="ga-threshold-str",
    ),
    pytest.param(
        update_event("beta", {"turn_detection": {"threshold": 1.5}}, event_id="evt_11"),
        "invalid_value",
        "evt_11",
        id="beta-threshold-range",
    ),
    pytest.param(
        update_event("beta", {"turn_detection": {"prefix_padding_ms": "x"}}, event_id="evt_12"),
        "invalid_value",
        "evt_12",
        id="beta-padding-str",
    ),
    pytest.param(
        update_event("beta", {"input_audio_format": "opus"}, event_id="evt_13"),
        "invalid_value",
        "evt_13",
        id="beta-format",
    ),
    pytest.param(
        update_event("ga", ga_input(format={"type": "audio/opus"}), event_id="evt_14"),
        "invalid_value",
        "evt_14",
        id="ga-format",
    ),
    pytest.param(
        update_event("ga", ga_input(turn_detection={"type": "push_to_talk"}), event_id="evt_15"),
        "invalid_value",
        "evt_15",
        id="ga-turn-detection-type",
    ),
    pytest.param(
        event("session.update", session={"type": "realtime"}, event_id="evt_16"),
        "invalid_value",
        "evt_16",
        id="ga-realtime-session",
    ),
]


@pytest.mark.parametrize("dialect", ["beta", "ga"])
@pytest.mark.parametrize(("text", "code", "event_id"), BAD_TEXT_EVENTS)
def test_bad_client_event_is_an_error_and_the_session_goes_on(
    dialect: Dialect, text: str, code: str, event_id: str | None
) -> None:
    protocol = new_protocol(dialect)
    before = protocol.live_config()
    error = the_error(protocol.receive_text(text))
    assert error["code"] == code
    assert error["event_id"] == event_id
    assert protocol.live_config() == before
    assert_append_works(protocol)


def test_bad_session_fields_are_named_in_the_error() -> None:
    protocol = new_protocol("ga")
    detection = {"type": "server_vad", "prefix_padding_ms": "x"}
    error = the_error(protocol.receive_text(update_event("ga", ga_input(turn_detection=detection))))
    assert error["param"] == "session.audio.input.turn_detection.prefix_padding_ms"
    error = the_error(protocol.receive_text(event("session.update", session={"type": "realtime"})))
    assert error["param"] == "session.type"
    assert "transcription" in error["message"]


@pytest.mark.parametrize("appended_ms", [0, 50, 99])
def test_commit_of_less_than_100_ms_is_an_error_and_the_audio_is_kept(appended_ms: int) -> None:
    protocol = manual_protocol("ga")
    if appended_ms:
        append(protocol, tone(appended_ms))
    error = the_error(protocol.receive_text(event("input_audio_buffer.commit", event_id="evt_c")))
    assert error["code"] == "input_audio_buffer_commit_empty"
    assert error["event_id"] == "evt_c"
    assert_append_works(protocol)
    # What was appended still counts towards the next commit.
    append(protocol, tone(100 - appended_ms - 20))
    assert protocol.receive_text(event("input_audio_buffer.commit"))[0] == Commit()


def test_binary_frames_are_an_error_and_the_session_goes_on() -> None:
    protocol = new_protocol("ga")
    assert the_error(protocol.receive_bytes(tone(20)))["code"] == "binary_not_supported"
    assert_append_works(protocol)


# --- the server ends the session ---


@pytest.mark.parametrize(
    ("reason", "close_code", "error_code", "error_type"),
    [
        ("idle_timeout", 1000, "session_idle_timeout", "invalid_request_error"),
        ("max_duration", 1000, "session_expired", "invalid_request_error"),
        ("revoked", 1008, "invalid_api_key", "invalid_request_error"),
        ("insufficient_credits", 1008, "insufficient_quota", "insufficient_quota"),
        ("shutdown", 1012, "server_shutting_down", "server_error"),
        ("error", 1011, "server_error", "server_error"),
    ],
)
def test_ending_says_why_then_closes(
    reason: EndReason, close_code: int, error_code: str, error_type: str
) -> None:
    actions = new_protocol("ga").ending(reason, "why it ends")
    assert actions[-1] == CloseSocket(close_code, error_code)
    [message] = messages(actions)
    assert message["type"] == "error"
    assert message["error"]["code"] == error_code
    assert message["error"]["type"] == error_type
    assert message["error"]["message"] == "why it ends"


def test_ending_after_the_client_closed_sends_nothing() -> None:
    assert new_protocol("ga").ending("client_closed", "gone") == [CloseSocket(1000)]


@pytest.mark.parametrize("dialect", ["beta", "ga"])
@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        ("insufficient_quota", "insufficient_quota"),
        ("rate_limit_exceeded", "rate_limit_error"),
        ("concurrency_limit_exceeded", "rate_limit_error"),
        ("invalid_api_key", "invalid_request_error"),
        ("model_not_found", "invalid_request_error"),
    ],
)
def test_refusal_is_one_error_event_then_a_policy_close(dialect: Dialect, code: str, error_type: str) -> None:
    actions = RealtimeProtocol.refusal(dialect, code, "not today")
    assert actions[-1] == CloseSocket(1008, code)
    [message] = messages(actions)
    assert message["type"] == "error" and message["event_id"].startswith("event_")
    assert message["error"] == {
        "type": error_type,
        "code": code,
        "message": "not today",
        "param": None,
        "event_id": None,
    }


def test_a_turn_the_server_flushes_while_ending_is_committed_before_it_completes() -> None:
    protocol = new_protocol("ga")
    [started] = messages(protocol.on_event(SpeechStarted(1.0)))
    protocol.on_event(Final("still talking", 1.0, 2.0))
    # The idle timeout or maximum duration flushes the open turn: no SpeechStopped comes.
    ended = messages(protocol.on_event(UtteranceEnd(2.5)))
    assert [event["type"] for event in ended] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert {event.get("item_id", event.get("item", {}).get("id")) for event in ended} == {started["item_id"]}
    assert ended[-1]["transcript"] == "still talking"
    assert ended[-1]["usage"]["seconds"] == 1.5
