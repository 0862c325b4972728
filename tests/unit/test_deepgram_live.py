"""Deepgram's live protocol, client side, fed messages and times by hand: finals, flushes, keepalives."""

from __future__ import annotations

from typing import Any

import pytest

from earshot.engines.base import TranscribeOptions
from earshot.engines.deepgram_live import DeepgramLive
from earshot.engines.deepgram_wire import DeepgramConfig
from earshot.engines.results import Final, Flushed, Partial, Word
from earshot.engines.spec import ModelSpec


def results(start: float, duration: float, text: str, **flags: Any) -> dict[str, Any]:
    words = [
        {"word": w.lower(), "punctuated_word": w, "start": start + i * 0.3, "end": start + i * 0.3 + 0.25}
        for i, w in enumerate(text.split())
    ]
    return {
        "type": "Results",
        "start": start,
        "duration": duration,
        "is_final": flags.get("is_final", True),
        "speech_final": False,
        "from_finalize": flags.get("from_finalize", False),
        "channel": {"alternatives": [{"transcript": text, "confidence": 0.9, "words": words}]},
    }


def test_a_finalize_is_answered_by_the_from_finalize_result() -> None:
    live = DeepgramLive(keepalive_s=4, finalize_timeout_s=5, interim_results=True)
    live.audio_sent(1.0, now=0.0)
    assert live.finalize(now=1.0) == ([{"type": "Finalize"}], [])
    got = live.on_message(results(0.0, 0.9, "Hello there.", from_finalize=True))
    words = (Word("Hello", 0.0, 0.25), Word("there.", 0.3, 0.55))
    assert got == [Final("Hello there.", 0.0, 0.9, words), Flushed()]


def test_a_final_reaching_the_audio_sent_answers_a_finalize_too() -> None:
    live = DeepgramLive(keepalive_s=4, finalize_timeout_s=5, interim_results=False)
    live.audio_sent(2.0, now=0.0)
    live.finalize(now=2.0)
    assert live.on_message(results(0.0, 1.0, "one", is_final=False)) == []  # no interim results wanted
    got = live.on_message(results(0.0, 2.0, "one two"))
    assert [type(r) for r in got] == [Final, Flushed]


def test_a_finalize_deepgram_never_answers_is_flushed_after_the_timeout() -> None:
    live = DeepgramLive(keepalive_s=100, finalize_timeout_s=2, interim_results=True)
    live.audio_sent(1.0, now=0.0)
    live.finalize(now=1.0)
    assert live.tick(now=2.5) == ([], [])
    assert live.tick(now=3.0) == ([], [Flushed()])


def test_nothing_new_since_the_last_final_flushes_at_once() -> None:
    live = DeepgramLive(keepalive_s=100, finalize_timeout_s=2, interim_results=True)
    live.audio_sent(1.0, now=0.0)
    live.on_message(results(0.0, 1.0, "done"))
    assert live.finalize(now=1.0) == ([], [Flushed()])


def test_interim_results_are_partials_and_idle_streams_send_keepalives() -> None:
    live = DeepgramLive(keepalive_s=4, finalize_timeout_s=2, interim_results=True)
    live.audio_sent(0.5, now=0.0)
    assert live.on_message(results(0.0, 0.5, "hel", is_final=False)) == [Partial("hel", 0.0, 0.5)]
    assert live.tick(now=3.9) == ([], [])
    assert live.tick(now=4.0) == ([{"type": "KeepAlive"}], [])
    assert live.tick(now=5.0) == ([], [])


def test_catalog_options_become_query_parameters_lists_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DG_UNIT_KEY", "k")
    spec = ModelSpec(
        engine="deepgram",
        api_key_env="DG_UNIT_KEY",
        options={
            "language": "en-GB",
            "smart_format": True,
            "keyterm": ["earshot", "sphinx"],
            "keepalive_s": 2,
        },
    )
    config = DeepgramConfig.from_spec("dg", spec)
    assert config.params(TranscribeOptions(), channels="1") == [
        ("model", "nova-3"),
        ("language", "en-GB"),
        ("smart_format", "true"),
        ("keyterm", "earshot"),
        ("keyterm", "sphinx"),
        ("channels", "1"),
    ]
    assert config.keepalive_s == 2.0
    assert config.params(TranscribeOptions(language="fr"))[1] == ("language", "fr")
