"""The SSE event writer of POST /v1/transcripts, fed events and the time, with no server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from earshot.api.transcripts.documents import Document, Paragraph
from earshot.api.transcripts.protocol import KEEPALIVE, IllegalTransition, StreamState, TranscriptEvents

DOCUMENT_ID = "6b9e0f4e-0000-5000-8000-000000000001"


def paragraph(start: float, end: float, text: str) -> Paragraph:
    return Paragraph(start=start, end=end, text=text)


def document(paragraphs: list[Paragraph], *, cached: bool = False) -> Document:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return Document(
        id=DOCUMENT_ID,
        name="talk.wav",
        model="pocketsphinx",
        language="en",
        duration=9.0,
        paragraphs=paragraphs,
        validated=None,
        created_at=now,
        updated_at=now,
        cached=cached,
    )


def parse(text: str) -> list[tuple[str, Any]]:
    """(event name, data) per event, and ("comment", text) per comment line, in order."""
    events: list[tuple[str, Any]] = []
    for block in text.split("\n\n"):
        if not block:
            continue
        if block.startswith(":"):
            events.append(("comment", block[1:].strip()))
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_a_transcript_streams_queued_then_growing_snapshots_then_the_document() -> None:
    writer = TranscriptEvents(DOCUMENT_ID, keepalive_s=0, now=0.0)
    first, second = paragraph(0.0, 3.5, "hello there"), paragraph(4.0, 7.0, "general kenobi")
    sent = writer.queued(2, 0.1) + writer.queued(2, 0.2) + writer.queued(1, 0.3)
    sent += writer.started(9.0, 1.0)
    sent += writer.transcribed([first], 3.5, 2.0) + writer.transcribed([first], 3.9, 2.1)
    sent += writer.transcribed([first, second], 7.0, 3.0)
    sent += writer.done(document([first, second]), 4.0)
    events = parse(sent)
    names = [name for name, _ in events]
    # The unchanged position is not repeated; the last snapshot reaches the end before `done`.
    assert names == ["queued"] * 2 + ["transcription"] * 5 + ["done"]
    assert [data["position"] for name, data in events if name == "queued"] == [2, 1]
    snapshots = [data for name, data in events if name == "transcription"]
    assert [len(s["paragraphs"]) for s in snapshots] == [0, 1, 1, 2, 2]
    assert [s["current_time"] for s in snapshots] == [0.0, 3.5, 3.9, 7.0, 9.0]
    assert {s["total_time"] for s in snapshots} == {9.0} and {s["document_id"] for s in snapshots} == {
        DOCUMENT_ID
    }
    assert snapshots[-1]["paragraphs"][1] == {
        "speaker_no": 0,
        "speaker_id": "speaker-0",
        "start": 4.0,
        "end": 7.0,
        "text": "general kenobi",
    }
    assert events[-1][1]["id"] == DOCUMENT_ID and events[-1][1]["cached"] is False
    assert writer.state is StreamState.DONE and writer.ended


def test_keepalives_fill_each_silence_of_keepalive_s_and_stop_at_the_end() -> None:
    writer = TranscriptEvents(DOCUMENT_ID, keepalive_s=15.0, now=100.0)
    assert writer.keepalive_due_in(110.0) == 5.0
    assert writer.tick(114.9) == ""
    assert writer.tick(115.0) == KEEPALIVE
    # The silence is counted again from the keepalive, and from every event sent.
    assert writer.keepalive_due_in(115.0) == 15.0
    writer.started(60.0, 120.0)
    assert writer.tick(130.0) == "" and writer.tick(135.0) == KEEPALIVE
    writer.error("UPSTREAM_SERVICE_ERROR", "the provider failed", 136.0)
    assert writer.keepalive_due_in(200.0) is None and writer.tick(200.0) == ""


def test_keepalives_are_off_at_zero() -> None:
    writer = TranscriptEvents(DOCUMENT_ID, keepalive_s=0, now=0.0)
    assert writer.keepalive_due_in(1e6) is None and writer.tick(1e6) == ""


def test_a_failure_sends_one_error_and_nothing_after_it() -> None:
    writer = TranscriptEvents(DOCUMENT_ID, keepalive_s=0, now=0.0)
    writer.started(10.0, 0.0)
    writer.transcribed([paragraph(0.0, 2.0, "half")], 2.0, 1.0)
    events = parse(writer.error("UPSTREAM_SERVICE_ERROR", "the provider dropped the connection", 2.0))
    assert events == [
        ("error", {"code": "UPSTREAM_SERVICE_ERROR", "detail": "the provider dropped the connection"})
    ]
    assert writer.state is StreamState.FAILED
    with pytest.raises(IllegalTransition):
        writer.transcribed([paragraph(2.0, 3.0, "more")], 3.0, 3.0)
    with pytest.raises(IllegalTransition):
        writer.done(document([]), 3.0)
    with pytest.raises(IllegalTransition):
        writer.error("INTERNAL_ERROR", "again", 3.0)


def test_a_failure_while_queued_is_an_error_without_any_snapshot() -> None:
    writer = TranscriptEvents(DOCUMENT_ID, keepalive_s=0, now=0.0)
    sent = writer.queued(1, 0.0) + writer.error("INVALID_AUDIO", "the file is not audio", 0.5)
    assert [name for name, _ in parse(sent)] == ["queued", "error"]


def test_a_cached_document_is_answered_with_done_alone() -> None:
    writer = TranscriptEvents(DOCUMENT_ID, keepalive_s=15.0, now=0.0)
    events = parse(writer.done(document([paragraph(0.0, 1.0, "kept")], cached=True), 0.0))
    assert [name for name, _ in events] == ["done"]
    assert events[0][1]["cached"] is True and events[0][1]["paragraphs"][0]["text"] == "kept"


def test_events_out_of_order_are_refused() -> None:
    writer = TranscriptEvents(DOCUMENT_ID, keepalive_s=0, now=0.0)
    with pytest.raises(IllegalTransition):
        writer.transcribed([paragraph(0.0, 1.0, "too early")], 1.0, 0.0)
    writer.started(5.0, 0.0)
    with pytest.raises(IllegalTransition):
        writer.queued(1, 0.0)
    with pytest.raises(IllegalTransition):
        writer.started(5.0, 0.0)


def test_progress_never_goes_back_nor_past_the_total() -> None:
    writer = TranscriptEvents(DOCUMENT_ID, keepalive_s=0, now=0.0)
    writer.started(5.0, 0.0)
    times = [parse(writer.transcribed([], t, 0.0))[0][1]["current_time"] for t in (2.0, 1.0, 7.0)]
    assert times == [2.0, 2.0, 5.0]
