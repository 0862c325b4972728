"""Rendering a Transcript into the bodies of OpenAI's POST /v1/audio/transcriptions response formats."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

from earshot.api.subtitles import milliseconds, srt_timestamp, vtt_timestamp
from earshot.engines.base import Segment, Transcript

TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"
VTT_MEDIA_TYPE = "text/vtt; charset=utf-8"
JSON_MEDIA_TYPE = "application/json"

# ISO-639-1 code -> the lowercase name Whisper and OpenAI's verbose_json report.
# fmt: off
LANGUAGE_NAMES = {
    "ar": "arabic", "cs": "czech", "da": "danish", "de": "german", "el": "greek", "en": "english",
    "es": "spanish", "fi": "finnish", "fr": "french", "he": "hebrew", "hi": "hindi", "id": "indonesian",
    "it": "italian", "ja": "japanese", "ko": "korean", "nl": "dutch", "no": "norwegian", "pl": "polish",
    "pt": "portuguese", "ru": "russian", "sv": "swedish", "tr": "turkish", "uk": "ukrainian",
    "vi": "vietnamese", "zh": "chinese",
}
# fmt: on


class ResponseFormat(StrEnum):
    """The `response_format` values OpenAI's transcription endpoint accepts."""

    JSON = "json"
    TEXT = "text"
    SRT = "srt"
    VERBOSE_JSON = "verbose_json"
    VTT = "vtt"


def _seconds_3(seconds: float) -> float:
    """Seconds rounded to the millisecond the same way the subtitle timestamps are."""
    return milliseconds(seconds) / 1000


def _cue_text(segment: Segment) -> str:
    """Segment text on one line: a line break inside a cue would end it early."""
    return " ".join(segment.text.split())


def _spoken(transcript: Transcript) -> Iterator[tuple[Segment, str]]:
    """Segments that have text, with their one-line text."""
    for segment in transcript.segments:
        text = _cue_text(segment)
        if text:
            yield segment, text


def render_srt(transcript: Transcript) -> str:
    """SubRip cues numbered from 1, one per segment with text."""
    return "".join(
        f"{number}\n{srt_timestamp(segment.start)} --> {srt_timestamp(segment.end)}\n{text}\n\n"
        for number, (segment, text) in enumerate(_spoken(transcript), start=1)
    )


def render_vtt(transcript: Transcript) -> str:
    """A WebVTT document, one cue per segment with text."""
    cues = (
        f"{vtt_timestamp(segment.start)} --> {vtt_timestamp(segment.end)}\n{text}\n\n"
        for segment, text in _spoken(transcript)
    )
    return "WEBVTT\n\n" + "".join(cues)


def language_name(code: str) -> str:
    """The lowercase language name OpenAI reports for an ISO-639-1 code; unknown codes pass through."""
    base = code.strip().lower().replace("_", "-").split("-")[0]
    return LANGUAGE_NAMES.get(base, code.strip().lower())


def _usage(usage_seconds: float) -> dict[str, Any]:
    """The duration usage object; the SDK types `seconds` as a float."""
    return {"type": "duration", "seconds": _seconds_3(usage_seconds)}


def _compression_ratio(text: str) -> float:
    """Whisper's gzip compression ratio of the text (high values hint at repetition loops)."""
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 3) if data else 0.0


def json_body(transcript: Transcript, usage_seconds: float) -> dict[str, Any]:
    """The `json` response body."""
    return {"text": transcript.text.strip(), "usage": _usage(usage_seconds)}


def verbose_json_body(
    transcript: Transcript, usage_seconds: float, *, include_words: bool, include_segments: bool
) -> dict[str, Any]:
    """The `verbose_json` response body, with segments and words as asked."""
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": language_name(transcript.language),
        "duration": _seconds_3(transcript.duration_s),
        "text": transcript.text.strip(),
    }
    if include_segments:
        body["segments"] = [
            {
                "id": index,
                "seek": milliseconds(segment.start) // 10,
                "start": _seconds_3(segment.start),
                "end": _seconds_3(segment.end),
                "text": text,
                "tokens": [],
                "temperature": segment.temperature,
                "avg_logprob": round(segment.avg_logprob, 4),
                "compression_ratio": (
                    round(segment.compression_ratio, 3)
                    if segment.compression_ratio is not None
                    else _compression_ratio(text)
                ),
                "no_speech_prob": round(segment.no_speech_prob, 4),
            }
            for index, (segment, text) in enumerate(_spoken(transcript))
        ]
    if include_words:
        body["words"] = [
            {"word": word.word.strip(), "start": _seconds_3(word.start), "end": _seconds_3(word.end)}
            for word in transcript.words
            if word.word.strip()
        ]
    body["usage"] = _usage(usage_seconds)
    return body


def render(
    transcript: Transcript, fmt: ResponseFormat, usage_seconds: float, *, granularities: set[str]
) -> tuple[str | dict[str, Any], str]:
    """The response body and its media type for the requested format."""
    match fmt:
        case ResponseFormat.JSON:
            return json_body(transcript, usage_seconds), JSON_MEDIA_TYPE
        case ResponseFormat.VERBOSE_JSON:
            body = verbose_json_body(
                transcript,
                usage_seconds,
                include_words="word" in granularities,
                include_segments=not granularities or "segment" in granularities,
            )
            return body, JSON_MEDIA_TYPE
        case ResponseFormat.TEXT:
            return transcript.text.strip() + "\n", TEXT_MEDIA_TYPE
        case ResponseFormat.SRT:
            return render_srt(transcript), TEXT_MEDIA_TYPE
        case ResponseFormat.VTT:
            return render_vtt(transcript), VTT_MEDIA_TYPE
