"""Stored transcripts on the wire: ids, paragraphs from segments, the checked validated shape, exports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from earshot.api.transcripts.documents import (
    Document,
    ExportFormat,
    Paragraph,
    ParagraphBuilder,
    ValidatedParagraphs,
    paragraph_of,
    render,
    transcript_id,
)
from earshot.engines.base import Segment

AUDIO = b"RIFF....some audio bytes"


def test_the_id_is_the_same_for_the_same_owner_audio_model_and_language_and_differs_otherwise() -> None:
    first = transcript_id("key1", AUDIO, "pocketsphinx", None)
    assert first == transcript_id("key1", AUDIO, "pocketsphinx", None)
    others = {
        transcript_id("key2", AUDIO, "pocketsphinx", None),
        transcript_id(None, AUDIO, "pocketsphinx", None),
        transcript_id("key1", AUDIO + b"!", "pocketsphinx", None),
        transcript_id("key1", AUDIO, "whisper-tiny.en", None),
        transcript_id("key1", AUDIO, "pocketsphinx", "en"),
    }
    assert first not in others and len(others) == 5


def test_a_segment_becomes_a_paragraph_of_its_speaker_or_of_speaker_0() -> None:
    plain = paragraph_of(Segment(1.0, 2.5, "  hello \n there "))
    assert plain is not None and (plain.speaker_no, plain.speaker_id, plain.text) == (
        0,
        "speaker-0",
        "hello there",
    )
    diarized = paragraph_of(Segment(3.0, 4.0, "second voice", speaker=2))
    assert diarized is not None and (diarized.speaker_no, diarized.speaker_id) == (2, "speaker-2")
    assert paragraph_of(Segment(5.0, 6.0, "   ")) is None


def test_segments_going_on_a_sentence_join_its_paragraph_and_a_sentence_pause_or_speaker_starts_one() -> None:
    builder = ParagraphBuilder()
    for segment in [
        Segment(0.0, 0.4, "had"),
        Segment(0.4, 1.0, "he married"),
        Segment(1.0, 2.0, "a more amiable woman."),
        Segment(2.1, 3.0, "He might"),
        Segment(4.0, 5.0, "have been"),
        Segment(5.0, 6.0, "made still", speaker=1),
    ]:
        builder.add(segment)
    assert [(p.start, p.end, p.text, p.speaker_no) for p in builder.paragraphs] == [
        (0.0, 2.0, "had he married a more amiable woman.", 0),
        (2.1, 3.0, "He might", 0),
        (4.0, 5.0, "have been", 0),
        (5.0, 6.0, "made still", 1),
    ]


def test_a_paragraph_stops_growing_at_max_joined_s() -> None:
    builder = ParagraphBuilder()
    for second in range(25):
        builder.add(Segment(float(second), second + 1.0, "word"))
    assert [p.end - p.start for p in builder.paragraphs] == [10.0, 10.0, 5.0]


@pytest.mark.parametrize(
    ("paragraphs", "complaint"),
    [
        ([{"start": -1, "end": 1, "text": "x"}], "greater than or equal to 0"),
        ([{"start": 2, "end": 1, "text": "x"}], r"start \(2\) is after end \(1\)"),
        ([{"start": 0, "end": 1, "text": 3}], "valid string"),
        ([{"start": 0, "end": 1}], "Field required"),
        ([{"start": 3, "end": 4, "text": "b"}, {"start": 1, "end": 2, "text": "a"}], "keep them in order"),
        ([{"start": 0, "end": 1, "text": "x", "colour": "red"}], "Extra inputs"),
    ],
)
def test_a_validated_version_of_the_wrong_shape_is_refused_saying_why(
    paragraphs: list[dict[str, object]], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        ValidatedParagraphs.model_validate({"validated": paragraphs})


def document(validated: list[Paragraph] | None = None) -> Document:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    return Document(
        id="d",
        name="talk.wav",
        model="m",
        language="en",
        duration=70.0,
        paragraphs=[
            Paragraph(start=0.0, end=1.5, text="machine words"),
            Paragraph(start=61, end=62.25, text="more"),
        ],
        validated=validated,
        created_at=now,
        updated_at=now,
    )


def test_exports_render_the_machine_version_as_subtitles_and_text() -> None:
    assert render(document(), ExportFormat.SRT) == (
        "1\n00:00:00,000 --> 00:00:01,500\nmachine words\n\n2\n00:01:01,000 --> 00:01:02,250\nmore\n\n"
    )
    assert render(document(), ExportFormat.VTT) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nmachine words\n\n00:01:01.000 --> 00:01:02.250\nmore\n\n"
    )
    assert render(document(), ExportFormat.TXT) == "machine words\n\nmore\n\n"


def test_exports_render_the_validated_version_in_place_of_the_machine_one_with_speakers() -> None:
    reviewed = [
        Paragraph(speaker_no=0, start=0.0, end=1.5, text="Machine words."),
        Paragraph(speaker_no=1, start=2.0, end=3.0, text="A reply."),
    ]
    assert (
        render(document(reviewed), ExportFormat.TXT) == "speaker-0: Machine words.\n\nspeaker-1: A reply.\n\n"
    )
    assert "<v speaker-1>A reply." in render(document(reviewed), ExportFormat.VTT)
    assert "machine words" not in render(document(reviewed), ExportFormat.SRT)
