"""Deepgram's response shapes: live messages (Results, SpeechStarted, UtteranceEnd, Metadata, Error) and the
prerecorded response, built from earshot's words.

Engines that punctuate (Whisper) give each word as their decoder wrote it in the context of its phrase, and it
is shown so. For engines with lowercase words and no punctuation (pocketsphinx), `punctuate` or
`smart_format` capitalise the first word of an utterance, end the utterance with a period and write "i" as
"I"; that is all the punctuation there is, and a Results message that does not end its utterance gets none.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from earshot import __version__
from earshot.engines.base import Transcript
from earshot.streaming.events import Word

CHANNEL = [0, 1]  # channel 0 of 1: earshot transcribes the mix of all channels
# A pause this long between sentences starts a new paragraph (`paragraphs`).
PARAGRAPH_PAUSE_S = 1.0
_SENTENCE_END = re.compile(r"[.?!][\"')\]]*$")
# Words whose period does not end a sentence.
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "prof.", "vs.", "e.g.", "i.e."})


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The model that served a request, as Deepgram's metadata names it."""

    name: str
    arch: str

    @property
    def uuid(self) -> str:
        """A stable id for the model (Deepgram's `model_uuid`)."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"earshot:{self.name}"))

    def to_wire(self) -> dict[str, str]:
        return {"name": self.name, "version": __version__, "arch": self.arch}


# Punctuation around a word (not inside it: "don't", "well-known" keep theirs).
_EDGE_PUNCTUATION = re.compile(r"^[^\w']+|[^\w']+$")


def now_iso() -> str:
    """The current time as Deepgram writes `created`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def spread_words(text: str, start: float, end: float, confidence: float = 1.0) -> tuple[Word, ...]:
    """Words for a text without word times: the span shared evenly between them."""
    tokens = text.split()
    if not tokens:
        return ()
    step = max(0.0, end - start) / len(tokens)
    return tuple(
        Word(token, start + index * step, start + (index + 1) * step, confidence)
        for index, token in enumerate(tokens)
    )


def plain_word(word: str) -> str:
    """Deepgram's `word`: lowercase, without the punctuation around it ("Meters." -> "meters")."""
    return _EDGE_PUNCTUATION.sub("", word).lower() or word


def _punctuated(words: Sequence[Word], opening: bool, closing: bool) -> list[str]:
    if any(word.word.strip() != plain_word(word.word) for word in words):
        # The engine punctuates and cases its own words (Whisper): they are shown as it wrote them.
        return [word.word.strip() for word in words]
    shown = ["I" if word.word == "i" else word.word for word in words]
    if shown:
        if opening:
            shown[0] = shown[0][:1].upper() + shown[0][1:]
        if closing and shown[-1][-1:].isalnum():
            shown[-1] += "."
    return shown


def words_json(
    words: Sequence[Word], *, punctuate: bool, diarize: bool, opening: bool = True, closing: bool = True
) -> tuple[list[dict[str, Any]], str, float]:
    """(Deepgram word objects, the transcript, the mean confidence) for words on the session clock; `opening`
    and `closing` say whether they start and end an utterance (for engines that do not punctuate)."""
    punctuated = _punctuated(words, opening, closing) if punctuate else []
    out: list[dict[str, Any]] = []
    for index, word in enumerate(words):
        item: dict[str, Any] = {
            "word": plain_word(word.word),
            "start": round(word.start, 3),
            "end": round(word.end, 3),
            "confidence": round(word.confidence, 4),
        }
        if punctuate:
            item["punctuated_word"] = punctuated[index]
        if diarize:
            item["speaker"] = 0
        out.append(item)
    transcript = " ".join(punctuated if punctuate else (plain_word(word.word) for word in words))
    confidence = sum(word.confidence for word in words) / len(words) if words else 0.0
    return out, transcript, round(confidence, 4)


def results(
    words: Sequence[Word],
    start: float,
    end: float,
    *,
    is_final: bool,
    speech_final: bool,
    from_finalize: bool,
    punctuate: bool,
    diarize: bool,
    request_id: str,
    model: ModelInfo,
    opening: bool = True,
    closing: bool = True,
) -> str:
    """A `Results` message for one stretch of words (interim when not `is_final`); `opening` and `closing`
    say whether the stretch starts and ends its utterance."""
    items, transcript, confidence = words_json(
        words, punctuate=punctuate, diarize=diarize, opening=opening, closing=closing
    )
    message: dict[str, Any] = {
        "type": "Results",
        "channel_index": CHANNEL,
        "duration": round(max(0.0, end - start), 3),
        "start": round(start, 3),
        "is_final": is_final,
        "speech_final": speech_final,
        "channel": {"alternatives": [{"transcript": transcript, "confidence": confidence, "words": items}]},
        "metadata": {"request_id": request_id, "model_info": model.to_wire(), "model_uuid": model.uuid},
    }
    if is_final:
        message["from_finalize"] = from_finalize
    return json.dumps(message)


def speech_started(timestamp: float) -> str:
    """A `SpeechStarted` message (vad_events)."""
    return json.dumps({"type": "SpeechStarted", "channel": CHANNEL, "timestamp": round(timestamp, 3)})


def utterance_end(last_word_end: float) -> str:
    """An `UtteranceEnd` message (utterance_end_ms)."""
    return json.dumps({"type": "UtteranceEnd", "channel": CHANNEL, "last_word_end": round(last_word_end, 3)})


def metadata(request_id: str, sha256: str, duration_s: float, channels: int, model: ModelInfo) -> str:
    """The `Metadata` message sent when a live stream ends."""
    return json.dumps(
        {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": request_id,
            "sha256": sha256,
            "created": now_iso(),
            "duration": round(duration_s, 3),
            "channels": channels,
            "models": [model.uuid],
            "model_info": {model.uuid: model.to_wire()},
        }
    )


def error(variant: str, description: str) -> str:
    """An `Error` message: something went wrong, and the stream goes on unless a close follows."""
    return json.dumps({"type": "Error", "variant": variant, "description": description})


def prerecorded(
    transcript: Transcript,
    *,
    request_id: str,
    sha256: str,
    channels: int,
    model: ModelInfo,
    punctuate: bool,
    diarize: bool,
    utterances: bool,
    paragraphs: bool = False,
) -> dict[str, Any]:
    """The response of `POST /v1/listen` for a whole transcript."""
    segments = [
        (segment, segment.words or spread_words(segment.text, segment.start, segment.end))
        for segment in transcript.segments
        if segment.text
    ]
    all_words = [word for _, words in segments for word in words]
    items: list[dict[str, Any]] = []
    texts: list[str] = []
    for _, words in segments:
        segment_items, text, _ = words_json(words, punctuate=punctuate, diarize=diarize)
        items.extend(segment_items)
        texts.append(text)
    confidence = sum(word.confidence for word in all_words) / len(all_words) if all_words else 0.0
    alternative: dict[str, Any] = {
        "transcript": " ".join(texts),
        "confidence": round(confidence, 4),
        "words": items,
    }
    if paragraphs:
        alternative["paragraphs"] = _paragraphs([words for _, words in segments], diarize=diarize)
    body: dict[str, Any] = {
        "metadata": {
            "transaction_key": "deprecated",
            "request_id": request_id,
            "sha256": sha256,
            "created": now_iso(),
            "duration": round(transcript.duration_s, 3),
            "channels": channels,
            "models": [model.uuid],
            "model_info": {model.uuid: model.to_wire()},
        },
        "results": {"channels": [{"alternatives": [alternative]}]},
    }
    if utterances:
        body["results"]["utterances"] = [
            _utterance(segment.start, segment.end, words, punctuate=punctuate, diarize=diarize)
            for segment, words in segments
        ]
    return body


def _utterance(
    start: float, end: float, words: Sequence[Word], *, punctuate: bool, diarize: bool
) -> dict[str, Any]:
    items, text, confidence = words_json(words, punctuate=punctuate, diarize=diarize)
    return {
        "start": round(start, 3),
        "end": round(end, 3),
        "confidence": confidence,
        "channel": 0,
        "transcript": text,
        "words": items,
        "speaker": 0,
        "id": str(uuid.uuid4()),
    }


def _paragraphs(segments: Sequence[Sequence[Word]], *, diarize: bool) -> dict[str, Any]:
    """Deepgram's `paragraphs`: sentences (ended by their punctuation, or by an utterance's end before a
    pause), grouped into paragraphs at pauses of PARAGRAPH_PAUSE_S."""
    shown: list[tuple[str, Word]] = []
    sentence_ends: set[int] = set()
    for words in segments:
        # Paragraphs always punctuate, as Deepgram's do.
        shown.extend(zip(_punctuated(words, opening=True, closing=True), words, strict=True))
        sentence_ends.add(len(shown) - 1)
    sentences: list[list[tuple[str, Word]]] = []
    current: list[tuple[str, Word]] = []
    for index, (text, word) in enumerate(shown):
        current.append((text, word))
        following = shown[index + 1][1] if index + 1 < len(shown) else None
        paused = following is None or following.start - word.end >= PARAGRAPH_PAUSE_S
        ends_sentence = _SENTENCE_END.search(text) and text.lower() not in _ABBREVIATIONS
        if ends_sentence or (index in sentence_ends and paused):
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    grouped: list[list[list[tuple[str, Word]]]] = []
    for sentence in sentences:
        if not grouped or sentence[0][1].start - grouped[-1][-1][-1][1].end >= PARAGRAPH_PAUSE_S:
            grouped.append([])
        grouped[-1].append(sentence)
    out: list[dict[str, Any]] = []
    texts: list[str] = []
    for paragraph in grouped:
        sentence_items: list[dict[str, Any]] = [
            {
                "text": " ".join(text for text, _ in sentence),
                "start": round(sentence[0][1].start, 3),
                "end": round(sentence[-1][1].end, 3),
            }
            for sentence in paragraph
        ]
        item: dict[str, Any] = {
            "sentences": sentence_items,
            "num_words": sum(len(sentence) for sentence in paragraph),
            "start": sentence_items[0]["start"],
            "end": sentence_items[-1]["end"],
        }
        text = " ".join(sentence["text"] for sentence in sentence_items)
        if diarize:
            item["speaker"] = 0
            text = f"Speaker 0: {text}"
        out.append(item)
        texts.append(text)
    return {"transcript": "\n" + "\n\n".join(texts) if texts else "", "paragraphs": out}
