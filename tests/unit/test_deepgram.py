"""The Deepgram live protocol without a server: query parameters, client frames, session events, the end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from earshot.api.deepgram.params import (
    ACCEPTED_AND_IGNORED,
    REFUSED,
    DeepgramError,
    ListenParams,
    choose_model,
)
from earshot.api.deepgram.protocol import MAX_STRETCH_S, DeepgramLiveProtocol
from earshot.api.deepgram.results import ModelInfo, prerecorded
from earshot.api.live.actions import (
    Action,
    AppendAudio,
    AppendEncoded,
    CloseSocket,
    Commit,
    EndStream,
    RefuseHandshake,
    Send,
)
from earshot.engines.base import Segment, Transcript
from earshot.routing.catalog import Catalog
from earshot.streaming.events import (
    Closed,
    Error,
    Final,
    Partial,
    PhraseEnd,
    SpeechStarted,
    SpeechStopped,
    UtteranceEnd,
    Word,
)
from earshot.streaming.live_config import LiveConfig

LINEAR16 = {"encoding": "linear16", "sample_rate": "16000"}


def params(**query: str) -> ListenParams:
    lists = {name: [value] for name, value in query.items()}
    return ListenParams.from_query(query, lists)


def protocol(**query: str) -> DeepgramLiveProtocol:
    return DeepgramLiveProtocol(
        params(**{**LINEAR16, **query}),
        ModelInfo("pocketsphinx", "pocketsphinx"),
        LiveConfig(idle_timeout_s=10.0, max_duration_s=60.0),
        "req-1",
    )


def sent(actions: list[Action]) -> list[dict[str, Any]]:
    return [json.loads(action.message) for action in actions if isinstance(action, Send)]


def kinds(actions: list[Action]) -> list[str]:
    return [message["type"] for message in sent(actions)]


def final(text: str, start: float, end: float) -> Final:
    tokens = text.split()
    step = (end - start) / len(tokens)
    words = tuple(Word(w, start + i * step, start + (i + 1) * step, 0.8) for i, w in enumerate(tokens))
    return Final(text, start, end, words)


def refused_with(**query: str) -> DeepgramError:
    with pytest.raises(DeepgramError) as refused:
        params(**query)
    return refused.value


# --- query parameters ---


def test_defaults_are_deepgrams() -> None:
    p = params(**LINEAR16)
    assert (p.interim_results, p.punctuate, p.vad_events, p.channels, p.endpointing) == (
        False,
        False,
        False,
        1,
        10,
    )
    assert p.input_rate_hz == 16_000


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"encoding": "opus", "sample_rate": "48000"}, "encoding"),
        ({"encoding": "pcm_s16le"}, "encoding"),
        ({"encoding": "linear16"}, "sample_rate is required"),
        ({**LINEAR16, "interim_results": "maybe"}, "interim_results"),
        ({**LINEAR16, "channels": "0"}, "channels"),
        ({**LINEAR16, "sample_rate": "1000"}, "sample_rate"),
        ({**LINEAR16, "endpointing": "soon"}, "endpointing"),
        ({**LINEAR16, "utterance_end_ms": "1000"}, "utterance_end_ms requires interim_results"),
        ({**LINEAR16, "language": "en US!"}, "language"),
    ],
)
def test_bad_parameters_are_a_400_with_deepgrams_error_body(query: dict[str, str], says: str) -> None:
    error = refused_with(**query)
    body = json.loads(error.body("req-9"))
    assert error.status == 400
    assert set(body) == {"err_code", "err_msg", "request_id"}
    assert body["err_code"] == "Bad Request" and body["request_id"] == "req-9"
    assert says in body["err_msg"]


def test_endpointing_sets_the_pause_that_ends_a_turn() -> None:
    assert params(**LINEAR16).vad.silence_duration_ms == 500, "not given: the VAD's own default"
    assert params(**LINEAR16, endpointing="800").vad.silence_duration_ms == 800
    assert params(**LINEAR16, endpointing="10").vad.silence_duration_ms == 300, "raised to the floor"
    off = params(**LINEAR16, endpointing="false")
    assert off.endpointing is None
    with_end = params(**LINEAR16, endpointing="false", interim_results="true", utterance_end_ms="1500")
    assert with_end.vad.silence_duration_ms == 1500


def test_g711_and_containers_have_their_rates() -> None:
    assert params(encoding="mulaw").input_rate_hz == 8_000
    assert params(encoding="alaw", sample_rate="16000").input_rate_hz == 16_000
    assert params().input_rate_hz == 16_000 and params().encoding is None


def test_keywords_key_terms_and_tags_are_accepted() -> None:
    p = ListenParams.from_query(
        {**LINEAR16, "keywords": "earshot:2", "tag": "a"},
        {"keywords": ["earshot:2", "gateway"], "keyterm": ["speech"], "tag": ["a", "b"]},
    )
    assert p.tag == ("a", "b") and p.prompt == "speech, earshot, gateway"


def test_deepgram_model_names_mean_the_default_and_catalog_ids_work() -> None:
    catalog = Catalog.embedded()
    assert choose_model(catalog, "nova-3").model_id is None
    assert choose_model(catalog, "pocketsphinx").model_id == "pocketsphinx"
    assert choose_model(catalog, "whisper-1").model_id == "whisper-1"
    assert choose_model(catalog, None).model_id is None


@pytest.mark.parametrize(
    ("code", "status", "err_code"),
    [
        ("invalid_api_key", 401, "INVALID_AUTH"),
        ("model_not_allowed", 403, "INSUFFICIENT_PERMISSIONS"),
        ("rate_limit_exceeded", 429, "TOO_MANY_REQUESTS"),
        ("concurrency_limit_exceeded", 429, "TOO_MANY_REQUESTS"),
        ("insufficient_quota", 402, "INSUFFICIENT_CREDITS"),
        ("model_not_supported", 400, "Bad Request"),
    ],
)
def test_refusals_are_http_errors_at_the_handshake(code: str, status: int, err_code: str) -> None:
    actions = DeepgramLiveProtocol.refusal(DeepgramError.refused(code, "no"), "req-2")
    refusal = actions[0]
    assert isinstance(refusal, RefuseHandshake) and refusal.status == status
    assert json.loads(refusal.body)["err_code"] == err_code
    # Where the server can't refuse a handshake, the client still learns why.
    assert kinds(actions) == ["Error"] and actions[-1] == CloseSocket(1008, err_code)


# --- client frames ---


def test_linear16_frames_are_appended_whole_samples_at_a_time() -> None:
    p = protocol()
    assert p.receive_bytes(b"\x01\x00\x02") == [AppendAudio(b"\x01\x00")]
    assert p.receive_bytes(b"\x00") == [AppendAudio(b"\x02\x00")]
    assert p.live_config().input_rate_hz == 16_000


def test_stereo_is_mixed_to_mono() -> None:
    p = protocol(channels="2")
    (action,) = p.receive_bytes(
        (1000).to_bytes(2, "little", signed=True) + (3000).to_bytes(2, "little", signed=True)
    )
    assert isinstance(action, AppendAudio)
    assert int.from_bytes(action.pcm16, "little", signed=True) in (1999, 2000)


def test_g711_frames_are_decoded_to_pcm16() -> None:
    p = protocol(encoding="mulaw", sample_rate="8000")
    (action,) = p.receive_bytes(bytes([0xFF, 0x7F, 0x00]))
    assert isinstance(action, AppendAudio) and len(action.pcm16) == 6
    assert p.live_config().input_rate_hz == 8_000


def test_containerized_audio_is_handed_to_the_decoder() -> None:
    p = DeepgramLiveProtocol(params(), ModelInfo("m", "a"), LiveConfig(), "r")
    assert p.receive_bytes(b"\x1aE\xdf\xa3webm") == [AppendEncoded(b"\x1aE\xdf\xa3webm")]


def test_keepalive_needs_no_answer_and_bad_frames_get_an_error_but_the_stream_goes_on() -> None:
    p = protocol()
    assert p.receive_text('{"type": "KeepAlive"}') == []
    for frame in ("not json", "[1, 2]", '{"type": "Shout"}', "{}"):
        messages = sent(p.receive_text(frame))
        assert [m["type"] for m in messages] == ["Error"] and messages[0]["variant"] == "SchemaError"
    assert p.receive_bytes(b"\x00\x00") == [AppendAudio(b"\x00\x00")], "still streaming"


def test_close_stream_ends_the_stream_and_later_audio_is_ignored() -> None:
    p = protocol()
    assert p.receive_text('{"type": "CloseStream"}') == [EndStream()]
    assert p.receive_bytes(b"\x00\x00") == []
    assert p.receive_text('{"type": "CloseStream"}') == []


def test_an_empty_binary_frame_closes_the_stream_as_older_clients_do() -> None:
    assert protocol().receive_bytes(b"") == [EndStream()]


# --- session events ---


def test_speech_started_is_sent_only_with_vad_events() -> None:
    assert protocol().on_event(SpeechStarted(0.4)) == []
    (message,) = sent(protocol(vad_events="true").on_event(SpeechStarted(0.4)))
    assert message == {"type": "SpeechStarted", "channel": [0, 1], "timestamp": 0.4}


def test_interim_results_only_when_asked() -> None:
    assert protocol().on_event(Partial("go forward", 0.2, 1.0)) == []
    (message,) = sent(protocol(interim_results="true").on_event(Partial("go forward", 0.2, 1.0)))
    assert (
        message["is_final"] is False and message["speech_final"] is False and "from_finalize" not in message
    )
    alternative = message["channel"]["alternatives"][0]
    assert alternative["transcript"] == "go forward"
    assert [w["word"] for w in alternative["words"]] == ["go", "forward"]
    assert alternative["words"][0]["start"] == 0.2 and alternative["words"][-1]["end"] == 1.0


def test_finals_carry_words_with_times_and_confidence_in_deepgrams_shape() -> None:
    p = protocol()
    p.on_event(SpeechStarted(0.1))
    assert p.on_event(final("go forward ten meters", 0.2, 1.8)) == [], "held until its stretch ends"
    (message,) = sent(p.on_event(UtteranceEnd(1.8)))
    assert message["type"] == "Results" and message["is_final"] is True
    assert message["channel_index"] == [0, 1] and message["start"] == 0.2 and message["duration"] == 1.6
    assert message["from_finalize"] is False and message["speech_final"] is False
    alternative = message["channel"]["alternatives"][0]
    assert alternative["transcript"] == "go forward ten meters" and alternative["confidence"] == 0.8
    assert alternative["words"][1] == {"word": "forward", "start": 0.6, "end": 1.0, "confidence": 0.8}
    assert message["metadata"]["request_id"] == "req-1"
    assert message["metadata"]["model_info"]["name"] == "pocketsphinx"
    assert message["metadata"]["model_uuid"]


def test_words_settled_one_at_a_time_come_as_one_final_at_the_pause() -> None:
    p = protocol(interim_results="true", punctuate="true")
    p.on_event(SpeechStarted(0.0))
    assert p.on_event(final("and", 0.1, 0.3)) == []
    (interim,) = sent(p.on_event(Partial("mister john", 0.3, 0.9)))
    assert interim["is_final"] is False and interim["start"] == 0.1
    assert interim["channel"]["alternatives"][0]["transcript"] == "And mister john", (
        "held words, then tentative"
    )
    assert p.on_event(final("mister", 0.3, 0.6)) == [] and p.on_event(final("john", 0.6, 0.9)) == []
    assert p.on_event(PhraseEnd(0.9)) == [], (
        "the next words or the turn's end decide whether it ends the turn"
    )
    phrase, interim = sent(p.on_event(Partial("dashwood", 1.0, 1.3)))
    assert phrase["is_final"] is True and phrase["speech_final"] is False
    assert phrase["channel"]["alternatives"][0]["transcript"] == "And mister john", "no period mid-utterance"
    assert interim["is_final"] is False and interim["channel"]["alternatives"][0]["transcript"] == "dashwood"
    p.on_event(final("dashwood had", 1.0, 1.6))
    assert p.on_event(PhraseEnd(1.6)) == []
    p.on_event(SpeechStopped(2.0))
    (last,) = sent(p.on_event(UtteranceEnd(1.6)))
    assert last["speech_final"] is True and last["start"] == 1.0
    assert last["channel"]["alternatives"][0]["transcript"] == "dashwood had.", "the utterance ends here"


def test_a_long_stretch_without_a_pause_is_sent_once_it_spans_max_stretch_s() -> None:
    p = protocol()
    p.on_event(SpeechStarted(0.0))
    assert p.on_event(final("one two three", 0.0, MAX_STRETCH_S / 2)) == []
    (message,) = sent(p.on_event(final("four five", MAX_STRETCH_S / 2, MAX_STRETCH_S)))
    assert message["channel"]["alternatives"][0]["transcript"] == "one two three four five"
    assert message["speech_final"] is False


def test_punctuate_and_diarize_decorate_words() -> None:
    p = protocol(punctuate="true", diarize="true")
    p.on_event(final("i can go forward", 0.0, 1.0))
    (message,) = sent(p.on_event(UtteranceEnd(1.0)))
    alternative = message["channel"]["alternatives"][0]
    assert alternative["transcript"] == "I can go forward."
    assert [w["punctuated_word"] for w in alternative["words"]] == ["I", "can", "go", "forward."]
    assert {w["speaker"] for w in alternative["words"]} == {0}
    assert [w["word"] for w in alternative["words"]] == ["i", "can", "go", "forward"]


def test_an_engine_that_punctuates_is_shown_as_it_wrote_each_word() -> None:
    p = protocol(punctuate="true")
    words = (Word(" Mr.", 0.0, 0.3), Word(" John", 0.3, 0.6), Word(" Dashwood,", 0.6, 1.0))
    p.on_event(Final("Mr. John Dashwood,", 0.0, 1.0, words))
    (message,) = sent(p.on_event(UtteranceEnd(1.0)))
    assert message["channel"]["alternatives"][0]["transcript"] == "Mr. John Dashwood,"
    assert [w["word"] for w in message["channel"]["alternatives"][0]["words"]] == ["mr", "john", "dashwood"]


def test_an_endpoint_gives_speech_final_on_the_last_final_and_utterance_end() -> None:
    p = protocol(interim_results="true", utterance_end_ms="1000", endpointing="300")
    p.on_event(SpeechStarted(0.1))
    assert p.on_event(SpeechStopped(2.0)) == []
    assert p.on_event(final("go forward", 0.2, 1.2)) == []
    speech_final, utterance_end = sent(p.on_event(UtteranceEnd(1.2)))
    assert speech_final["type"] == "Results" and speech_final["speech_final"] is True
    assert speech_final["is_final"] is True
    assert speech_final["channel"]["alternatives"][0]["transcript"] == "go forward"
    assert utterance_end == {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 1.2}


def test_an_endpoint_after_the_last_final_is_an_empty_speech_final() -> None:
    p = protocol(endpointing="300")
    p.on_event(SpeechStarted(0.0))
    assert sent(p.on_event(final("go forward", 0.0, MAX_STRETCH_S)))[0]["speech_final"] is False
    p.on_event(SpeechStopped(MAX_STRETCH_S + 0.5))
    (message,) = sent(p.on_event(UtteranceEnd(MAX_STRETCH_S)))
    assert message["speech_final"] is True and message["channel"]["alternatives"][0]["transcript"] == ""


def test_without_endpointing_there_is_no_speech_final() -> None:
    p = protocol(endpointing="false")
    p.on_event(SpeechStarted(0.1))
    p.on_event(SpeechStopped(2.0))
    p.on_event(final("go forward", 0.2, 1.2))
    (message,) = sent(p.on_event(UtteranceEnd(1.2)))
    assert message["is_final"] is True and message["speech_final"] is False


def test_finalize_mid_turn_flushes_into_from_finalize_finals_and_the_stream_stays_open() -> None:
    p = protocol(interim_results="true")
    p.on_event(SpeechStarted(0.1))
    assert p.on_event(final("go", 0.2, 0.5)) == []
    assert p.receive_text('{"type": "Finalize"}') == [Commit()]
    assert p.on_event(final("forward ten", 0.5, 1.3)) == []
    (flushed,) = sent(p.on_event(UtteranceEnd(1.3)))
    assert flushed["is_final"] is True and flushed["from_finalize"] is True
    assert flushed["channel"]["alternatives"][0]["transcript"] == "go forward ten"
    # The stream goes on: more audio, another turn, ordinary finals.
    assert p.receive_bytes(b"\x00\x00") == [AppendAudio(b"\x00\x00")]
    p.on_event(SpeechStarted(2.0))
    p.on_event(SpeechStopped(3.0))
    p.on_event(final("meters", 2.1, 2.6))
    assert sent(p.on_event(UtteranceEnd(2.6)))[0]["from_finalize"] is False


def test_finalize_with_nothing_heard_answers_with_an_empty_from_finalize_result() -> None:
    (message,) = sent(protocol().receive_text('{"type": "Finalize"}'))
    assert message["is_final"] is True and message["from_finalize"] is True
    assert message["channel"]["alternatives"][0]["words"] == []


def test_finalize_while_a_turns_text_is_pending_marks_that_text() -> None:
    p = protocol()
    p.on_event(SpeechStarted(0.1))
    p.on_event(SpeechStopped(1.5))
    assert p.receive_text('{"type": "Finalize"}') == []
    p.on_event(final("go forward", 0.2, 1.2))
    (message,) = sent(p.on_event(UtteranceEnd(1.2)))
    assert message["from_finalize"] is True and message["speech_final"] is True


def test_a_finalized_turn_with_no_words_still_answers() -> None:
    p = protocol()
    p.on_event(SpeechStarted(0.1))
    p.receive_text('{"type": "Finalize"}')
    (message,) = sent(p.on_event(UtteranceEnd(0.4)))
    assert message["from_finalize"] is True and message["channel"]["alternatives"][0]["transcript"] == ""


def test_an_engine_error_is_reported_and_the_stream_goes_on() -> None:
    p = protocol()
    p.on_event(SpeechStarted(0.1))
    (message,) = sent(p.on_event(Error("transcription_failed", "the engine failed")))
    assert message == {"type": "Error", "variant": "transcription_failed", "description": "the engine failed"}
    assert p.on_event(Closed()) == []
    assert p.receive_bytes(b"\x00\x00") == [AppendAudio(b"\x00\x00")]


# --- the end ---


def test_close_stream_ends_with_metadata_then_a_normal_close() -> None:
    p = protocol()
    audio = b"\x01\x00" * 16_000
    p.receive_bytes(audio)
    p.receive_text('{"type": "CloseStream"}')
    actions = p.ending("finished", "the client has no more audio")
    (metadata,) = sent(actions)
    assert actions[-1] == CloseSocket(1000)
    assert metadata["type"] == "Metadata" and metadata["request_id"] == "req-1"
    assert metadata["duration"] == 1.0 and metadata["channels"] == 1
    assert metadata["sha256"] == hashlib.sha256(audio).hexdigest()
    assert metadata["transaction_key"] == "deprecated" and metadata["created"].endswith("Z")


def test_an_idle_stream_is_closed_with_net_0001() -> None:
    actions = protocol().ending("idle_timeout", "the session was idle for too long")
    assert kinds(actions) == ["Error", "Metadata"]
    assert sent(actions)[0]["variant"] == "NET-0001"
    assert actions[-1] == CloseSocket(1011, "NET-0001")


@pytest.mark.parametrize(
    ("reason", "code", "why"),
    [
        ("revoked", 1008, "INVALID_AUTH"),
        ("insufficient_credits", 1008, "INSUFFICIENT_CREDITS"),
        ("bad_audio", 1008, "DATA-0000"),
        ("shutdown", 1012, "SERVER_SHUTTING_DOWN"),
        ("error", 1011, "INTERNAL_SERVER_ERROR"),
    ],
)
def test_the_server_ending_a_stream_says_why(reason: Any, code: int, why: str) -> None:
    actions = protocol().ending(reason, "because")
    assert sent(actions)[0] == {"type": "Error", "variant": why, "description": "because"}
    assert actions[-1] == CloseSocket(code, why)


def test_a_client_that_left_gets_nothing_more() -> None:
    assert protocol().ending("client_closed", "gone") == [CloseSocket(1000)]


def test_engine_options_follow_the_parameters() -> None:
    options = protocol(interim_results="true", language="en-US", keyterm="earshot").transcribe_options()
    assert (options.interim_results, options.language, options.prompt) == (True, "en-US", "earshot")
    assert protocol().transcribe_options().interim_results is False


def test_words_an_engine_punctuates_are_plain_in_word_and_as_written_in_punctuated_word() -> None:
    from earshot.api.deepgram.results import words_json

    whisper_words = [
        Word("Go", 0.0, 0.3),
        Word("forward", 0.3, 0.8),
        Word("10", 0.8, 1.1),
        Word("meters.", 1.1, 1.6),
    ]
    items, transcript, _ = words_json(whisper_words, punctuate=True, diarize=False)
    assert [item["word"] for item in items] == ["go", "forward", "10", "meters"]
    assert [item["punctuated_word"] for item in items] == ["Go", "forward", "10", "meters."]
    assert transcript == "Go forward 10 meters."
    items, transcript, _ = words_json(whisper_words, punctuate=False, diarize=False)
    assert transcript == "go forward 10 meters" and "punctuated_word" not in items[0]
    # Words of an engine that does not punctuate get Deepgram's own capital and closing period.
    _, transcript, _ = words_json([Word("i", 0, 1), Word("agree", 1, 2)], punctuate=True, diarize=False)
    assert transcript == "I agree."


def test_every_refused_or_ignored_parameter_is_named_in_the_docs() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    section = docs[docs.index("## Deepgram") : docs.index("### WS /v1/listen (live)")]
    missing = [name for name in (*REFUSED, *ACCEPTED_AND_IGNORED) if f"`{name}`" not in section]
    assert missing == []


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_refused_parameter_is_a_400_unless_it_is_false(name: str) -> None:
    assert params(**{name: "false"})
    error = refused_with(**{name: "true"})
    assert error.status == 400 and name in error.err_msg and "not supported" in error.err_msg


def test_pipecats_default_query_is_accepted() -> None:
    query = {
        "detect_entities": "false",
        "diarize": "false",
        "dictation": "false",
        "interim_results": "true",
        "numerals": "false",
        "punctuate": "true",
        "smart_format": "false",
        "model": "nova-3-general",
        "language": "en",
        "encoding": "linear16",
        "channels": "1",
        "multichannel": "false",
        "sample_rate": "16000",
    }
    parsed = params(**query)
    assert parsed.interim_results and parsed.punctuated and parsed.input_rate_hz == 16_000


def test_paragraphs_without_engine_punctuation_are_utterance_sentences_split_at_pauses() -> None:
    segments = tuple(
        Segment(start, start + 1.0, text, final(text, start, start + 1.0).words)
        for start, text in ((0.0, "go forward ten meters"), (1.3, "then stop"), (4.0, "i can turn"))
    )
    body = prerecorded(
        Transcript("", "en", 5.0, segments),
        request_id="req-1",
        sha256="0",
        channels=1,
        model=ModelInfo("pocketsphinx", "pocketsphinx"),
        punctuate=False,
        diarize=False,
        utterances=False,
        paragraphs=True,
    )
    paragraphs = body["results"]["channels"][0]["alternatives"][0]["paragraphs"]
    first, second = paragraphs["paragraphs"]
    assert [s["text"] for s in first["sentences"]] == ["Go forward ten meters.", "Then stop."]
    assert (first["num_words"], first["start"], first["end"]) == (6, 0.0, 2.3) and "speaker" not in first
    assert second["sentences"] == [{"text": "I can turn.", "start": 4.0, "end": 5.0}]
    assert paragraphs["transcript"] == "\nGo forward ten meters. Then stop.\n\nI can turn."
