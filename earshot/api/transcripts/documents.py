"""A stored transcript on the wire: its paragraphs, the document, its id, and its txt, srt and vtt forms."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from earshot.api.subtitles import srt_timestamp, vtt_timestamp
from earshot.engines.base import Segment
from earshot.store.records import TranscriptRecord

# The namespace of transcript ids: uuid5 of the owner, the audio's SHA-256, the model and the language.
TRANSCRIPT_NAMESPACE = uuid.UUID("6f1c9a52-1d0e-4b7e-9a51-3c2f8e0d7b64")
ANONYMOUS_OWNER = "anonymous"


class Paragraph(BaseModel):
    """A stretch of one speaker's speech; times in seconds from the start of the audio."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    speaker_no: int = Field(default=0, ge=0)
    speaker_id: str = ""
    start: float = Field(ge=0)
    end: float = Field(ge=0)
    text: str

    @model_validator(mode="after")
    def _checked(self) -> Paragraph:
        if self.start > self.end:
            raise ValueError(f"start ({self.start:g}) is after end ({self.end:g})")
        if not self.speaker_id:
            self.speaker_id = speaker_id(self.speaker_no)
        return self


class Document(BaseModel):
    """A transcript as the API answers it."""

    id: str
    name: str
    model: str
    language: str | None
    duration: float
    paragraphs: list[Paragraph]
    validated: list[Paragraph] | None
    created_at: datetime
    updated_at: datetime
    cached: bool = False

    @classmethod
    def of(cls, record: TranscriptRecord, *, cached: bool = False) -> Document:
        """The wire document of a stored record."""
        return cls(
            id=record.id,
            name=record.name,
            model=record.model,
            language=record.language,
            duration=round(record.duration_s, 3),
            paragraphs=[Paragraph.model_validate(p) for p in record.paragraphs],
            validated=(
                [Paragraph.model_validate(p) for p in record.validated]
                if record.validated is not None
                else None
            ),
            created_at=record.created_at,
            updated_at=record.updated_at,
            cached=cached,
        )

    @property
    def shown(self) -> list[Paragraph]:
        """What the renderings show: the validated version when there is one, else the machine's."""
        return self.validated if self.validated is not None else self.paragraphs


class ValidatedParagraphs(BaseModel):
    """The body of PATCH /v1/transcripts/{id}: a reviewed version (null clears it)."""

    model_config = ConfigDict(extra="forbid")

    validated: list[Paragraph] | None

    @field_validator("validated")
    @classmethod
    def _in_order(cls, paragraphs: list[Paragraph] | None) -> list[Paragraph] | None:
        shown = paragraphs or []
        for index in range(1, len(shown)):
            if shown[index].start < shown[index - 1].start:
                raise ValueError(f"paragraph {index} starts before paragraph {index - 1}: keep them in order")
        return paragraphs


def speaker_id(speaker_no: int) -> str:
    """The id a paragraph gives its speaker number."""
    return f"speaker-{speaker_no}"


def transcript_id(owner_key_id: str | None, audio: bytes, model: str, language: str | None) -> str:
    """The id of the document this owner gets for this audio, model and language: the same each time."""
    audio_sha = hashlib.sha256(audio).hexdigest()
    owner = owner_key_id if owner_key_id is not None else ANONYMOUS_OWNER
    return str(uuid.uuid5(TRANSCRIPT_NAMESPACE, "\n".join((owner, audio_sha, model, language or ""))))


# A segment joins the paragraph before it when the same speaker goes on within JOIN_GAP_S, the paragraph has
# not ended a sentence, and it stays within MAX_JOINED_S: engines that commit a few words at a time
# (WhisperLiveKit) then read as phrases, while sentence-sized segments (Whisper) stay a paragraph each, short
# enough for a subtitle cue.
JOIN_GAP_S = 0.5
MAX_JOINED_S = 10.0
SENTENCE_ENDS = (".", "?", "!", "…")


class ParagraphBuilder:
    """A transcript's paragraphs, built as the engine's segments arrive."""

    def __init__(self) -> None:
        self.paragraphs: list[Paragraph] = []

    def add(self, segment: Segment) -> None:
        """Add one segment's text: to the last paragraph when it goes on from it, else as a new one."""
        paragraph = paragraph_of(segment)
        if paragraph is None:
            return
        last = self.paragraphs[-1] if self.paragraphs else None
        if (
            last is not None
            and last.speaker_no == paragraph.speaker_no
            and paragraph.start - last.end <= JOIN_GAP_S
            and paragraph.end - last.start <= MAX_JOINED_S
            and not last.text.endswith(SENTENCE_ENDS)
        ):
            self.paragraphs[-1] = last.model_copy(
                update={"end": max(last.end, paragraph.end), "text": f"{last.text} {paragraph.text}"}
            )
        else:
            self.paragraphs.append(paragraph)


def paragraph_of(segment: Segment) -> Paragraph | None:
    """The paragraph of one engine segment (None when it has no text); speaker 0 when undiarized."""
    text = " ".join(segment.text.split())
    if not text:
        return None
    speaker_no = segment.speaker if segment.speaker is not None else 0
    start = max(0.0, segment.start)
    return Paragraph(
        speaker_no=speaker_no,
        speaker_id=speaker_id(speaker_no),
        start=round(start, 3),
        end=round(max(start, segment.end), 3),
        text=text,
    )


def paragraphs_json(paragraphs: Iterable[Paragraph]) -> list[dict[str, Any]]:
    """Paragraphs as the JSON objects the store keeps."""
    return [paragraph.model_dump(mode="json") for paragraph in paragraphs]


class ExportFormat(StrEnum):
    """The formats GET /v1/transcripts/{id} renders."""

    JSON = "json"
    TXT = "txt"
    SRT = "srt"
    VTT = "vtt"


MEDIA_TYPES = {
    ExportFormat.JSON: "application/json",
    ExportFormat.TXT: "text/plain; charset=utf-8",
    ExportFormat.SRT: "application/x-subrip; charset=utf-8",
    ExportFormat.VTT: "text/vtt; charset=utf-8",
}


def _speakers_differ(paragraphs: Sequence[Paragraph]) -> bool:
    return len({paragraph.speaker_no for paragraph in paragraphs}) > 1


def _line(paragraph: Paragraph, with_speaker: bool) -> str:
    text = " ".join(paragraph.text.split())
    return f"{paragraph.speaker_id}: {text}" if with_speaker else text


def render_txt(document: Document) -> str:
    """Plain text, one paragraph per block; each named by its speaker when there is more than one."""
    shown = document.shown
    with_speaker = _speakers_differ(shown)
    return "".join(f"{_line(p, with_speaker)}\n\n" for p in shown if p.text.strip())


def render_srt(document: Document) -> str:
    """SubRip cues numbered from 1, one per paragraph with text."""
    shown = [p for p in document.shown if p.text.strip()]
    with_speaker = _speakers_differ(shown)
    return "".join(
        f"{number}\n{srt_timestamp(p.start)} --> {srt_timestamp(p.end)}\n{_line(p, with_speaker)}\n\n"
        for number, p in enumerate(shown, start=1)
    )


def render_vtt(document: Document) -> str:
    """A WebVTT document, one cue per paragraph with text (a voice tag per speaker when there are several)."""
    shown = [p for p in document.shown if p.text.strip()]
    with_speaker = _speakers_differ(shown)
    cues = (
        f"{vtt_timestamp(p.start)} --> {vtt_timestamp(p.end)}\n"
        f"{f'<v {p.speaker_id}>' if with_speaker else ''}{' '.join(p.text.split())}\n\n"
        for p in shown
    )
    return "WEBVTT\n\n" + "".join(cues)


def render(document: Document, fmt: ExportFormat) -> str:
    """The document in an export format (json: the document itself)."""
    match fmt:
        case ExportFormat.JSON:
            return document.model_dump_json()
        case ExportFormat.TXT:
            return render_txt(document)
        case ExportFormat.SRT:
            return render_srt(document)
        case ExportFormat.VTT:
            return render_vtt(document)
