"""Sarvam AI: REST `POST /speech-to-text` (multipart; key in `api-subscription-key`).

Sarvam's REST API takes about 30 s of audio per request, so longer audio is cut at pauses into pieces of at
most `max_piece_s` (sarvam_pieces.py), requested `max_parallel` at a time and stitched back in order, each
piece's times shifted by where it starts. Streams send one request per finalized phrase (no Partials, each
stretch of audio is paid for once); `stream_mode: agreement` re-decodes the growing turn every second for
Partials instead, at the price of a request per second of speech.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import numpy as np

from earshot.audio.pcm import Audio
from earshot.engines.agreement import AgreementStream
from earshot.engines.base import EngineError, EngineStream, Segment, TranscribeOptions
from earshot.engines.provider_io import HttpProviderEngine, unreadable_reply, wav_bytes
from earshot.engines.result_queue import ResultQueue
from earshot.engines.results import EngineResult, Final, Flushed, Word
from earshot.engines.sarvam_pieces import has_speech, pieces_at_pauses, speech_probabilities
from earshot.engines.spec import CatalogError, ModelSpec
from earshot.engines.upstream import status_error, transport_error
from earshot.engines.workers import WorkerPool

log = logging.getLogger(__name__)

PROVIDER = "sarvam"
DEFAULT_BASE_URL = "https://api.sarvam.ai"
DEFAULT_MODEL = "saarika:v2.5"
# ISO 639-1 codes whose Sarvam code is not simply "<code>-IN".
_SARVAM_CODES = {"or": "od-IN"}


@dataclass(frozen=True, slots=True)
class SarvamConfig:
    """Where Sarvam is, the key, and how to cut and send audio."""

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    language_code: str = "unknown"
    # What the gateway checks a caller's language against (Sarvam's code without its region).
    language: str = "en"
    max_piece_s: float = 29.0
    max_parallel: int = 4
    with_timestamps: bool = True
    stream_mode: str = "phrases"
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0

    @classmethod
    def from_spec(cls, model_id: str, spec: ModelSpec) -> SarvamConfig:
        """Build from a catalog entry; the key is read from the environment variable it names."""
        options = spec.options
        stream_mode = str(options.get("stream_mode", "phrases"))
        language_code = str(options.get("language_code", "unknown"))
        region_free = language_code.split("-")[0].lower() if language_code != "unknown" else "en"
        if stream_mode not in ("phrases", "agreement"):
            raise CatalogError(f"model {model_id!r}: stream_mode must be phrases or agreement")
        return cls(
            api_key=spec.api_key(model_id),
            base_url=(spec.base_url or DEFAULT_BASE_URL).rstrip("/"),
            model=spec.upstream_model or DEFAULT_MODEL,
            language_code=language_code,
            language=str(options.get("language", region_free)),
            max_piece_s=min(30.0, float(options.get("max_piece_s", 29.0))),
            max_parallel=max(1, int(options.get("max_parallel", 4))),
            with_timestamps=bool(options.get("with_timestamps", True)),
            stream_mode=stream_mode,
            timeout_s=spec.timeout_s,
            connect_timeout_s=spec.connect_timeout_s,
        )

    def language_for(self, language: str | None) -> str:
        """Sarvam's `language_code` for a caller's language ("hi" -> "hi-IN"), else the catalog's."""
        if not language:
            return self.language_code
        if "-" in language or language == "unknown":
            return language
        return _SARVAM_CODES.get(language.lower(), f"{language.lower()}-IN")


def segments_of(body: dict[str, Any], offset_s: float, duration_s: float) -> list[Segment]:
    """A reply's transcript as Segments on the caller's clock: one per timestamped chunk, else one."""
    text = str(body["transcript"]).strip()
    if not text:
        return []
    stamps = body.get("timestamps") or {}
    chunks = stamps.get("words") or []
    starts = stamps.get("start_time_seconds") or []
    ends = stamps.get("end_time_seconds") or []
    if chunks and len(chunks) == len(starts) == len(ends):
        segments = []
        for chunk, start, end in zip(chunks, starts, ends, strict=True):
            chunk_text = str(chunk).strip()
            if chunk_text:
                segments.append(_segment(chunk_text, offset_s + float(start), offset_s + float(end)))
        return segments
    return [_segment(text, offset_s, offset_s + duration_s)]


def _segment(text: str, start: float, end: float) -> Segment:
    """A segment whose words share its span evenly (Sarvam times chunks, not words)."""
    tokens = text.split()
    step = (end - start) / max(1, len(tokens))
    words = tuple(Word(token, start + i * step, start + (i + 1) * step) for i, token in enumerate(tokens))
    return Segment(start, end, text, words)


class SarvamEngine(HttpProviderEngine):
    """Sarvam's speech-to-text REST API, with long audio cut at pauses and stitched."""

    def __init__(self, config: SarvamConfig, name: str = "sarvam") -> None:
        super().__init__(config.timeout_s, config.connect_timeout_s)
        self.name = name
        self.language = config.language
        # Sarvam decides which languages it recognises (and detects with `unknown`).
        self.languages: frozenset[str] | None = None
        self.config = config
        self._requests = asyncio.Semaphore(config.max_parallel)

    async def transcribe_segments(self, audio: Audio, options: TranscribeOptions) -> AsyncIterator[Segment]:
        """Request every piece (a few at a time); yield their segments in order as each is back."""
        if audio.duration_s <= self.config.max_piece_s:
            pieces = [(0.0, audio.duration_s)]
        else:
            probabilities = await asyncio.to_thread(speech_probabilities, audio)
            cuts = pieces_at_pauses(probabilities, audio.duration_s, self.config.max_piece_s)
            pieces = [(s, e) for s, e in cuts if has_speech(probabilities, s, e)]
        language = self.config.language_for(options.language)
        requests = [asyncio.ensure_future(self._piece(audio.slice(s, e), s, language)) for s, e in pieces]
        try:
            for request in requests:
                for segment in await request:
                    yield segment
        finally:
            for request in requests:
                request.cancel()
            for request in requests:
                with contextlib.suppress(asyncio.CancelledError, EngineError):
                    await request

    async def _piece(self, piece: Audio, offset_s: float, language: str) -> list[Segment]:
        async with self._requests:
            body = await self._request(piece, language)
        try:
            return segments_of(body, offset_s, piece.duration_s)
        except (KeyError, TypeError, ValueError) as e:
            raise unreadable_reply(PROVIDER, repr(body)) from e

    async def _request(self, piece: Audio, language: str) -> dict[str, Any]:
        client = self._started_client()
        fields = {"model": self.config.model, "language_code": language}
        if self.config.with_timestamps:
            fields["with_timestamps"] = "true"
        try:
            response = await client.post(
                f"{self.config.base_url}/speech-to-text",
                headers={"api-subscription-key": self.config.api_key},
                files={"file": ("audio.wav", wav_bytes(piece), "audio/wav")},
                data=fields,
            )
        except httpx.TransportError as e:
            raise transport_error(PROVIDER, e) from e
        if response.status_code >= 300:
            raise status_error(PROVIDER, response)
        try:
            body = response.json()
        except ValueError as e:
            raise unreadable_reply(PROVIDER, response.text) from e
        if not isinstance(body, dict):
            raise unreadable_reply(PROVIDER, response.text)
        return body

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        """One request per finalized phrase, or LocalAgreement re-decodes with `stream_mode: agreement`."""
        if self.config.stream_mode == "agreement":
            return AgreementStream(self, options)
        return PhraseStream(self, options)


class PhraseStream:
    """A stream that transcribes each finalized stretch of audio with one request: Finals, no Partials."""

    def __init__(self, engine: SarvamEngine, options: TranscribeOptions) -> None:
        self._engine = engine
        self._options = options
        self._chunks: list[np.ndarray] = []
        self._position_s = 0.0
        self._results = ResultQueue()
        self._last: asyncio.Task[None] | None = None
        self._closed = False

    async def send(self, audio: Audio) -> None:
        """Keep the audio until the next finalize."""
        self._results.raise_if_failed()
        if self._closed:
            raise EngineError("the stream is closed")
        self._chunks.append(audio.samples)

    async def finalize(self) -> None:
        """Transcribe the audio since the last finalize in the background; its Finals, then Flushed."""
        self._results.raise_if_failed()
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)
        self._chunks = []
        phrase, offset_s = Audio(samples), self._position_s
        self._position_s += phrase.duration_s
        self._last = asyncio.create_task(self._transcribe(phrase, offset_s, self._last))

    async def close(self) -> None:
        """Finalize what is left, wait for every request, then end `results()`."""
        if self._closed:
            return
        if self._chunks and self._results.error is None:
            await self.finalize()
        self._closed = True
        try:
            if self._last is not None:
                await self._last
        finally:
            self._results.end()

    def results(self) -> AsyncIterator[EngineResult]:
        """Finals and Flushed in order; raises the UpstreamError that ended the stream."""
        return self._results.results()

    async def _transcribe(self, phrase: Audio, offset_s: float, before: asyncio.Task[None] | None) -> None:
        segments: list[Segment] = []
        error: EngineError | None = None
        if phrase.duration_s > 0:
            try:
                options = replace(self._options, word_timestamps=True)
                segments = [s async for s in self._engine.transcribe_segments(phrase, options)]
            except EngineError as e:
                error = e
        if before is not None:
            await before  # results go out in the order the phrases were finalized
        if error is not None:
            self._results.fail(error)
            return
        for segment in segments:
            words = tuple(replace(w, start=w.start + offset_s, end=w.end + offset_s) for w in segment.words)
            self._results.put(Final(segment.text, segment.start + offset_s, segment.end + offset_s, words))
        self._results.put(Flushed())


def build(model_id: str, spec: ModelSpec, pool: WorkerPool) -> SarvamEngine:
    """The engine for one catalog entry (`engine: sarvam`)."""
    return SarvamEngine(SarvamConfig.from_spec(model_id, spec), name=model_id)
