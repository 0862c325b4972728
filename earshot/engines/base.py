"""The Engine protocol: what every local engine and cloud provider offers earshot."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from earshot.audio.pcm import Audio
from earshot.engines.results import EngineResult, Word


@dataclass(frozen=True, slots=True)
class TranscribeOptions:
    """What the caller asked for, independent of wire protocol."""

    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    word_timestamps: bool = False
    # Live streams only: whether the caller wants Partial results (engines may skip work when not).
    interim_results: bool = True
    # A draft: the decode only feeds a revisable Partial, so engines may trade accuracy for speed.
    draft: bool = False
    # The caller's own VAD found speech in this audio (a live phrase): decode it whole, without looking again.
    speech_gated: bool = False


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of recognised speech with its words; times in seconds from the start."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = field(default_factory=tuple)
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    # Whisper's own figures for the decode; None where the engine has none (then computed from the text).
    compression_ratio: float | None = None
    temperature: float = 0.0
    # The speaker, numbered from 0, where the engine or provider diarizes; None where it does not.
    speaker: int | None = None


@dataclass(frozen=True, slots=True)
class Transcript:
    """A whole recognition result."""

    text: str
    language: str
    duration_s: float
    segments: tuple[Segment, ...] = field(default_factory=tuple)

    @property
    def words(self) -> tuple[Word, ...]:
        """All words of all segments, in order."""
        return tuple(word for segment in self.segments for word in segment.words)

    @classmethod
    def from_segments(cls, segments: list[Segment], language: str, duration_s: float) -> Transcript:
        """Join segments into a transcript, their texts separated by single spaces."""
        text = " ".join(segment.text for segment in segments if segment.text)
        return cls(text=text, language=language, duration_s=duration_s, segments=tuple(segments))


class EngineError(Exception):
    """The engine failed on audio it accepted; the message is safe to show a caller."""


class UpstreamError(EngineError):
    """A provider call failed. The message is generic and safe to show; details go to DEBUG logs only.

    `transient` failures (connect errors, timeouts, 429, 5xx, a socket closed with 1011) may succeed on
    another try or another provider; the rest (400-class: bad audio, parameters or credentials) will not.
    """

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status
        self.retry_after_s = retry_after_s


@runtime_checkable
class EngineStream(Protocol):
    """An open incremental recognition: PCM in, Partial and Final results out."""

    async def send(self, audio: Audio) -> None:
        """Feed the next stretch of audio."""

    async def finalize(self) -> None:
        """Turn everything heard so far into Final results followed by one Flushed; the stream stays open."""

    async def close(self) -> None:
        """Finalize, then end: `results()` finishes after the last Final."""

    def results(self) -> AsyncIterator[EngineResult]:
        """Partial, Final and Flushed results in the order the engine produced them."""
        ...


@runtime_checkable
class MeasuresCapacity(Protocol):
    """An engine that knows, once started, how many live sessions it can keep real-time."""

    def live_capacity(self) -> int | None:
        """Live sessions this engine's workers can carry at once (None until measured)."""
        ...


def live_sessions_for(workers: int, live_cost_per_s: float) -> int:
    """Live sessions `workers` can serve when each second of live audio costs `live_cost_per_s` of one worker.

    Only LIVE_UTILISATION of each worker is planned for, so bursts of speech and one-shot work still fit.
    """
    return max(1, int(workers * LIVE_UTILISATION / max(live_cost_per_s, 1e-6)))


# The share of the engine workers live sessions may plan to use.
LIVE_UTILISATION = 0.85


@runtime_checkable
class AbortableStream(Protocol):
    """A stream that can end at once, skipping the final decode no one will read."""

    async def abort(self) -> None:
        """End `results()` now without finalizing; what was sent is dropped."""


@runtime_checkable
class SpeculativeStream(Protocol):
    """A stream that can start its final decode early: a pause that may end the turn is the moment."""

    async def prepare_final(self) -> None:
        """Start decoding what was sent as `finalize` would; a `finalize` with no audio sent after it then
        takes that decode (done or under way) instead of starting one."""


async def prepare_final(stream: EngineStream) -> None:
    """Let the stream start its final decode now, where it can (nothing happens where it cannot)."""
    if isinstance(stream, SpeculativeStream):
        await stream.prepare_final()


async def abort_stream(stream: EngineStream) -> None:
    """End a stream whose caller is gone: at once where the engine can, else by closing it."""
    if isinstance(stream, AbortableStream):
        await stream.abort()
    else:
        await stream.close()


@runtime_checkable
class Engine(Protocol):
    """A speech recogniser earshot can route to."""

    name: str
    language: str

    @property
    def ready(self) -> bool:
        """True once `start` has loaded what the engine needs."""
        ...

    async def start(self) -> None:
        """Load models or open connections; `ready` is true after."""

    async def stop(self) -> None:
        """Release what `start` took."""

    def transcribe_segments(self, audio: Audio, options: TranscribeOptions) -> AsyncIterator[Segment]:
        """Recognise a whole buffer, yielding segments in order as soon as each is decoded.

        An engine with a true `reads_encoded_audio` attribute may be handed an `EncodedAudio` (an upload kept
        encoded) and reads it block by block; every other engine is given decoded samples.
        """
        ...

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        """Start an incremental recognition."""
        ...


def base_language(code: str) -> str:
    """A language code without its region, lowercase: `en` for `en-US`, `en_GB` or `EN`."""
    return re.split(r"[-_]", code)[0].lower()


def supports_language(engine: Engine, language: str) -> bool:
    """Whether the engine recognises a language code (`en`, `en-US`); see `languages_of`."""
    languages = languages_of(engine)
    return languages is None or base_language(language) in languages


def languages_of(engine: Engine) -> frozenset[str] | None:
    """The base language codes an engine recognises: its `languages` (None: any), else its one `language`."""
    languages: frozenset[str] | None = getattr(engine, "languages", frozenset({engine.language}))
    return languages


async def transcribe(engine: Engine, audio: Audio, options: TranscribeOptions) -> Transcript:
    """Recognise a whole buffer into one Transcript."""
    segments = [segment async for segment in engine.transcribe_segments(audio, options)]
    language = base_language(options.language) if options.language else engine.language
    return Transcript.from_segments(segments, language, audio.duration_s)
