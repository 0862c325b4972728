"""The sans-I/O realtime relay: dialect translation, metering, model lock and scrubbed upstream events."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from earshot.api.live.actions import CloseSocket, ModelRefused, Send
from earshot.api.realtime.relay import Metered, RealtimeRelay, RelayAction, ToUpstream
from earshot.api.realtime.session import Dialect, RealtimeSettings
from earshot.engines.realtime_upstream import RealtimeDialect, RealtimeTarget
from earshot.routing.catalog import ModelNotFound

UPSTREAM_MODEL = "gpt-4o-transcribe"
SECRET = "upstream-detail-do-not-show"


def canonical(name: str) -> str:
    names = {"relayed": "relayed", "alias-of-relayed": "relayed", "local": "local"}
    if name not in names:
        raise ModelNotFound(name)
    return names[name]


def choose(name: str) -> str:
    if name == "alias-of-relayed":
        raise ModelRefused("model_not_allowed", "this key may not use that model")
    return canonical(name)


def relay(client: Dialect = "ga", upstream: RealtimeDialect = "ga") -> RealtimeRelay:
    target = RealtimeTarget(
        "openai", "wss://upstream.invalid/v1/realtime", {}, upstream, UPSTREAM_MODEL, 5, 5
    )
    settings = RealtimeSettings(id="sess_test", model="relayed")
    return RealtimeRelay(settings, client, target, "relayed", canonical, choose)


def sent(actions: list[RelayAction]) -> list[dict[str, Any]]:
    return [json.loads(a.message) for a in actions if isinstance(a, Send) and isinstance(a.message, str)]


def upstream(actions: list[RelayAction]) -> list[dict[str, Any]]:
    return [json.loads(a.message) for a in actions if isinstance(a, ToUpstream)]


def append(audio: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()})


def test_the_first_update_upstream_names_the_providers_model_and_its_answer_is_not_shown() -> None:
    session = relay()
    update = upstream(session.upstream_opened())[0]
    assert update["type"] == "session.update"
    assert update["session"]["audio"]["input"]["transcription"]["model"] == UPSTREAM_MODEL
    assert update["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    created = sent(session.from_upstream(json.dumps({"type": "session.created", "session": {"id": "up"}})))
    assert created[0]["session"]["id"] == "sess_test"
    assert created[0]["session"]["audio"]["input"]["transcription"]["model"] == "relayed"
    assert session.from_upstream(json.dumps({"type": "session.updated", "session": {}})) == []


def test_appended_pcm_is_metered_and_forwarded_unchanged() -> None:
    session = relay()
    payload = append(b"\x01\x00" * 2400)
    actions = session.from_client(payload)
    assert actions[0] == Metered(100.0)
    assert upstream(actions) == [json.loads(payload)]


def test_pcm_at_another_rate_is_resampled_to_24_khz_but_metered_as_sent() -> None:
    session = relay()
    session.from_client(
        json.dumps(
            {
                "type": "session.update",
                "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
            }
        )
    )
    actions = session.from_client(append(b"\x10\x00" * 16000))
    assert actions[0] == Metered(1000.0)
    forwarded = base64.b64decode(upstream(actions)[0]["audio"])
    assert 40_000 < len(forwarded) <= 48_000


def test_g711_is_metered_at_8_khz_and_passed_through() -> None:
    session = relay(client="beta", upstream="beta")
    update = session.from_client(
        json.dumps({"type": "transcription_session.update", "session": {"input_audio_format": "g711_ulaw"}})
    )
    assert upstream(update)[0]["session"]["input_audio_format"] == "g711_ulaw"
    assert session.from_client(append(b"\xff" * 800))[0] == Metered(100.0)


def test_a_beta_client_update_goes_up_in_ga_and_comes_back_in_beta() -> None:
    session = relay(client="beta", upstream="ga")
    session.upstream_opened()
    session.from_upstream(json.dumps({"type": "session.updated"}))
    update = {
        "type": "transcription_session.update",
        "session": {"turn_detection": None, "input_audio_transcription": {"language": "fr"}},
    }
    forwarded = upstream(session.from_client(json.dumps(update)))[0]
    assert forwarded["type"] == "session.update"
    assert forwarded["session"]["audio"]["input"]["turn_detection"] is None
    assert forwarded["session"]["audio"]["input"]["transcription"] == {
        "model": UPSTREAM_MODEL,
        "language": "fr",
    }
    answered = sent(session.from_upstream(json.dumps({"type": "session.updated", "session": {}})))[0]
    assert answered["type"] == "transcription_session.updated"
    assert (
        answered["session"]["turn_detection"] is None
        and answered["session"]["input_audio_transcription"]["language"] == "fr"
    )
    added = sent(session.from_upstream(json.dumps({"type": "conversation.item.added", "item": {"id": "i"}})))[
        0
    ]
    assert added["type"] == "conversation.item.created"
    assert session.from_upstream(json.dumps({"type": "conversation.item.done", "item": {"id": "i"}})) == []


def test_a_ga_client_gets_item_added_from_a_beta_provider() -> None:
    session = relay(client="ga", upstream="beta")
    assert upstream(session.upstream_opened())[0]["type"] == "transcription_session.update"
    added = sent(
        session.from_upstream(json.dumps({"type": "conversation.item.created", "item": {"id": "i"}}))
    )
    assert added[0]["type"] == "conversation.item.added"


@pytest.mark.parametrize(
    ("model", "code"),
    [("local", "model_locked"), ("nope", "model_not_found"), ("alias-of-relayed", "model_not_allowed")],
)
def test_a_relayed_session_keeps_its_model(model: str, code: str) -> None:
    session = relay()
    update = {"type": "session.update", "session": {"audio": {"input": {"transcription": {"model": model}}}}}
    actions = session.from_client(json.dumps(update))
    assert not upstream(actions)
    error = sent(actions)[0]["error"]
    assert error["code"] == code and error["param"] == "session.audio.input.transcription.model"


def test_transcription_events_pass_through_untouched() -> None:
    session = relay()
    delta = json.dumps(
        {"type": "conversation.item.input_audio_transcription.delta", "item_id": "i", "delta": "hi"}
    )
    assert session.from_upstream(delta) == [Send(delta)]


def test_upstream_server_errors_are_generic_and_client_errors_name_earshots_model() -> None:
    session = relay()
    server_error = {"type": "error", "error": {"type": "server_error", "code": "x", "message": SECRET}}
    shown = sent(session.from_upstream(json.dumps(server_error)))[0]["error"]
    assert SECRET not in shown["message"] and "ref " in shown["message"] and shown["code"] == "upstream_error"
    client_error = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "code": "input_audio_buffer_commit_empty",
            "message": f"{UPSTREAM_MODEL}: buffer too small",
            "event_id": "e1",
        },
    }
    shown = sent(session.from_upstream(json.dumps(client_error)))[0]["error"]
    assert shown["code"] == "input_audio_buffer_commit_empty" and shown["event_id"] == "e1"
    assert UPSTREAM_MODEL not in shown["message"] and "relayed" in shown["message"]
    failed = {
        "type": "conversation.item.input_audio_transcription.failed",
        "item_id": "i",
        "error": {"message": SECRET},
    }
    shown = sent(session.from_upstream(json.dumps(failed)))[0]
    assert shown["item_id"] == "i" and SECRET not in json.dumps(shown)


def test_bad_client_events_are_answered_locally() -> None:
    session = relay()
    assert sent(session.from_client("{nope"))[0]["error"]["code"] == "invalid_json"
    bad_audio = json.dumps({"type": "input_audio_buffer.append", "audio": "***", "event_id": "e2"})
    error = sent(session.from_client(bad_audio))[0]["error"]
    assert error["code"] == "invalid_base64" and error["event_id"] == "e2"
    assert (
        sent(session.from_client(json.dumps({"type": "response.create"})))[0]["error"]["code"]
        == "unknown_event_type"
    )
    assert upstream(
        session.from_client(json.dumps({"type": "input_audio_buffer.commit", "event_id": "c"}))
    ) == [{"type": "input_audio_buffer.commit", "event_id": "c"}]


def test_revocation_ends_like_a_local_session() -> None:
    actions = relay().ending("revoked", "this API key has been revoked")
    assert (
        json.loads(str(actions[0].message if isinstance(actions[0], Send) else ""))["error"]["code"]
        == "invalid_api_key"
    )
    assert actions[1] == CloseSocket(1008, "invalid_api_key")
