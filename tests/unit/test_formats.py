"""Rendering transcripts into OpenAI's transcription response formats."""

from __future__ import annotations

import pytest
from openai.types.audio import Transcription, TranscriptionVerbose
from openai.types.audio.transcription import UsageDuration

from earshot.api.openai.formats import (
    ResponseFormat,
    json_body,
    render,
    render_srt,
    render_vtt,
    srt_timestamp,
    verbose_json_body,
    vtt_timestamp,
)
from earshot.engines.base import Segment, Transcript
from earshot.streaming.events import Word

SEGMENT_KEYS = {
    "id",
    "seek",
    "start",
    "end",
    "text",
    "tokens",
    "temperature",
    "avg_logprob",
    "compression_ratio",
    "no_speech_prob",
}


def _transcript() -> Transcript:
    return Transcript(
        text=" Hello there. How are you?",
        language="en",
        duration_s=3725.0004,
        segments=(
            Segment(
                0.0,
                2.5,
                " Hello there.",
                words=(Word(" Hello", 0.0, 0.8), Word(" there.", 0.9, 2.5)),
                avg_logprob=-0.25,
                no_speech_prob=0.01,
            ),
            Segment(2.5, 3.1234, "   ", words=()),
            Segment(3.1234, 3723.456, " How are\nyou?", words=(Word(" How", 3.1234, 3.5),)),
        ),
    )


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "00:00:00,000"),
        (0.0, "00:00:00,000"),
        (3723.456, "01:02:03,456"),
        (360_000.5, "100:00:00,500"),
        (0.0005, "00:00:00,001"),
        (0.0015, "00:00:00,002"),
        (0.0025, "00:00:00,003"),
        (0.00049, "00:00:00,000"),
        (1.0005, "00:00:01,001"),
        (3661.0005, "01:01:01,001"),
        (59.9996, "00:01:00,000"),
        (-3.0, "00:00:00,000"),
        (float("nan"), "00:00:00,000"),
    ],
)
def test_srt_timestamp_is_exact_to_the_millisecond(seconds: float, expected: str) -> None:
    assert srt_timestamp(seconds) == expected


def test_vtt_timestamp_uses_a_dot() -> None:
    assert vtt_timestamp(3723.456) == "01:02:03.456"
    assert vtt_timestamp(3600 * 123 + 0.0005) == "123:00:00.001"


def test_srt_document_is_exact_and_skips_empty_segments() -> None:
    assert render_srt(_transcript()) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n00:00:03,123 --> 01:02:03,456\nHow are you?\n\n"
    )


def test_vtt_document_is_exact_and_skips_empty_segments() -> None:
    assert render_vtt(_transcript()) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:02.500\nHello there.\n\n"
        "00:00:03.123 --> 01:02:03.456\nHow are you?\n\n"
    )


def test_subtitles_of_a_silent_transcript() -> None:
    silent = Transcript(text="", language="en", duration_s=1.0)
    assert render_srt(silent) == ""
    assert render_vtt(silent) == "WEBVTT\n\n"


def test_json_body_validates_with_the_sdk() -> None:
    body = json_body(_transcript(), usage_seconds=3725.0004)
    assert set(body) == {"text", "usage"}
    parsed = Transcription.model_validate(body)
    assert parsed.text == "Hello there. How are you?"
    assert isinstance(parsed.usage, UsageDuration)
    assert parsed.usage.type == "duration"
    assert parsed.usage.seconds == 3725.0


def test_verbose_json_with_segments_validates_with_the_sdk() -> None:
    body = verbose_json_body(_transcript(), 12.3456, include_words=False, include_segments=True)
    assert set(body) == {"task", "language", "duration", "text", "segments", "usage"}
    assert body["task"] == "transcribe"
    assert body["language"] == "english"
    assert all(set(segment) == SEGMENT_KEYS for segment in body["segments"])
    parsed = TranscriptionVerbose.model_validate(body)
    assert parsed.duration == 3725.0
    assert parsed.usage is not None and parsed.usage.seconds == 12.346
    assert parsed.segments is not None
    assert [(s.id, s.seek, s.start, s.end, s.text) for s in parsed.segments] == [
        (0, 0, 0.0, 2.5, "Hello there."),
        (1, 312, 3.123, 3723.456, "How are you?"),
    ]
    assert parsed.segments[0].avg_logprob == -0.25
    assert parsed.segments[0].no_speech_prob == 0.01
    assert parsed.words is None


def test_verbose_json_words_only() -> None:
    body = verbose_json_body(_transcript(), 1.0, include_words=True, include_segments=False)
    assert "segments" not in body
    parsed = TranscriptionVerbose.model_validate(body)
    assert parsed.words is not None
    assert [(w.word, w.start, w.end) for w in parsed.words] == [
        ("Hello", 0.0, 0.8),
        ("there.", 0.9, 2.5),
        ("How", 3.123, 3.5),
    ]


@pytest.mark.parametrize(
    ("code", "name"), [("en", "english"), ("DE", "german"), ("pt-BR", "portuguese"), ("xx", "xx")]
)
def test_verbose_json_names_the_language(code: str, name: str) -> None:
    transcript = Transcript(text="hi", language=code, duration_s=1.0)
    body = verbose_json_body(transcript, 1.0, include_words=False, include_segments=False)
    assert body["language"] == name


@pytest.mark.parametrize(
    ("granularities", "has_segments", "has_words"),
    [
        (set(), True, False),
        ({"segment"}, True, False),
        ({"word"}, False, True),
        ({"word", "segment"}, True, True),
    ],
)
def test_render_verbose_json_follows_granularities(
    granularities: set[str], has_segments: bool, has_words: bool
) -> None:
    body, media_type = render(_transcript(), ResponseFormat.VERBOSE_JSON, 4.0, granularities=granularities)
    assert media_type == "application/json"
    assert isinstance(body, dict)
    assert ("segments" in body, "words" in body) == (has_segments, has_words)
    TranscriptionVerbose.model_validate(body)


@pytest.mark.parametrize(
    ("fmt", "media_type", "starts_with"),
    [
        ("text", "text/plain; charset=utf-8", "Hello there."),
        ("srt", "text/plain; charset=utf-8", "1\n00:00:00,000 --> "),
        ("vtt", "text/vtt; charset=utf-8", "WEBVTT\n\n00:00:00.000 --> "),
    ],
)
def test_render_text_formats(fmt: str, media_type: str, starts_with: str) -> None:
    body, got_media_type = render(_transcript(), ResponseFormat(fmt), 4.0, granularities=set())
    assert got_media_type == media_type
    assert isinstance(body, str)
    assert body.startswith(starts_with)
    assert body.endswith("\n")


def test_render_text_is_the_transcript_plus_newline() -> None:
    body, _ = render(_transcript(), ResponseFormat.TEXT, 4.0, granularities=set())
    assert body == "Hello there. How are you?\n"


def test_render_json() -> None:
    body, media_type = render(_transcript(), ResponseFormat.JSON, 4.0, granularities={"word"})
    assert media_type == "application/json"
    assert body == {"text": "Hello there. How are you?", "usage": {"type": "duration", "seconds": 4.0}}


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError):
        ResponseFormat("diarized_json")
