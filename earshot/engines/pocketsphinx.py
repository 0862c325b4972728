"""pocketsphinx: the offline default engine; its en-US model ships inside the PyPI wheel.

One-shot audio is split at pauses by pocketsphinx's endpointer, and each speech region is decoded as its own
utterance in a worker process, so regions decode on every core at once and come back in order. A live stream
keeps one decoder inside one worker and decodes incrementally.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.base import EngineError, Segment, TranscribeOptions
from earshot.engines.workers import WorkerPool
from earshot.streaming.events import EngineResult, Final, Flushed, Partial, Word

# Speech regions: the endpointer decides on a short window so a single spoken word counts; regions are
# padded so that word edges reach the decoder whole.
REGION_PAD_S = 0.25
ENDPOINTER_WINDOW_S = 0.15
ENDPOINTER_RATIO = 0.8
MAX_REGION_S = 30.0
# A live utterance starts decoding once this much is in, so its features are normalised by its own audio.
PRIME_S = 0.5
# Peak sample value under which an utterance is taken as silence (about -54 dBFS).
SILENCE_PEAK = 64


@dataclass(frozen=True, slots=True)
class PocketsphinxConfig:
    """Decoder settings; empty means the model shipped in the wheel. Keys are pocketsphinx config names."""

    settings: tuple[tuple[str, str | int | float | bool], ...] = ()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> PocketsphinxConfig:
        """Build from a catalog entry's `options` mapping (e.g. hmm, lm, dict, beam)."""
        return cls(tuple(sorted(options.items())))


class PocketsphinxEngine:
    """The pocketsphinx engine, decoding in the shared worker pool."""

    language = "en"

    def __init__(self, config: PocketsphinxConfig, pool: WorkerPool, name: str = "pocketsphinx") -> None:
        self.name = name
        self.ready = False
        self._config = config
        self._pool = pool

    async def start(self) -> None:
        """Load the model in every worker so the first request pays no start-up cost."""
        await self._pool.on_every_worker(warm_up, self._config)
        self.ready = True

    async def stop(self) -> None:
        """Nothing to release: the decoders live as long as the worker processes."""
        self.ready = False

    async def transcribe_segments(self, audio: Audio, options: TranscribeOptions) -> AsyncIterator[Segment]:
        """Decode every speech region concurrently; yield their segments in order."""
        regions = await asyncio.to_thread(speech_regions, audio)
        decodes = [
            asyncio.ensure_future(self._pool.run(decode_region, self._config, audio.slice(s, e).pcm16(), s))
            for s, e in regions
        ]
        try:
            for decode in decodes:
                segment = await decode
                if segment.text:
                    yield segment
        finally:
            for decode in decodes:
                decode.cancel()

    def open_stream(self, options: TranscribeOptions) -> PocketsphinxStream | UtteranceStream:
        """Start an incremental decode pinned to one worker, or, without interim results, whole utterances."""
        if options.interim_results:
            return PocketsphinxStream(self._config, self._pool)
        return UtteranceStream(self._config, self._pool)


def speech_regions(
    audio: Audio, window_s: float = ENDPOINTER_WINDOW_S, ratio: float = ENDPOINTER_RATIO
) -> list[tuple[float, float]]:
    """Start and end times of the speech in `audio`, padded, merged where they touch, split when too long."""
    from pocketsphinx import Endpointer

    endpointer = Endpointer(window_s, ratio, 0, ENGINE_RATE_HZ)
    frame_bytes = endpointer.frame_bytes
    pcm = audio.pcm16()
    raw_regions: list[tuple[float, float]] = []
    for offset in range(0, len(pcm), frame_bytes):
        frame = pcm[offset : offset + frame_bytes]
        was_in_speech = endpointer.in_speech
        if len(frame) < frame_bytes:
            speech = endpointer.end_stream(frame) if was_in_speech else None
        else:
            speech = endpointer.process(frame)
        if speech is not None and not endpointer.in_speech:
            raw_regions.append((endpointer.speech_start, endpointer.speech_end))
    if endpointer.in_speech:
        raw_regions.append((endpointer.speech_start, audio.duration_s))
    return _pad_and_split(raw_regions, audio.duration_s)


def _pad_and_split(raw: list[tuple[float, float]], duration_s: float) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in raw:
        start, end = max(0.0, start - REGION_PAD_S), min(duration_s, end + REGION_PAD_S)
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    regions: list[tuple[float, float]] = []
    for start, end in merged:
        pieces = max(1, math.ceil((end - start) / MAX_REGION_S))
        step = (end - start) / pieces
        regions.extend((start + i * step, start + (i + 1) * step) for i in range(pieces))
    return regions


# --- worker-process side: decoders are cached per process, keyed by their config ---

_decoders: dict[PocketsphinxConfig, Any] = {}
_streams: dict[str, _StreamState] = {}


def warm_up(config: PocketsphinxConfig) -> None:
    """Load this worker's decoder for `config` now rather than on the first request."""
    load_decoder(config)


def load_decoder(config: PocketsphinxConfig) -> Any:
    """This worker's decoder for `config`, created on first use."""
    decoder = _decoders.get(config)
    if decoder is None:
        decoder = _new_decoder(config)
        _decoders[config] = decoder
    return decoder


def _new_decoder(config: PocketsphinxConfig) -> Any:
    from pocketsphinx import Decoder

    try:
        return Decoder(loglevel="FATAL", **dict(config.settings))
    except (RuntimeError, ValueError, KeyError) as e:
        raise EngineError(f"pocketsphinx could not load its model: {e}") from None


def decode_region(config: PocketsphinxConfig, pcm16: bytes, offset_s: float) -> Segment:
    """Decode one speech region as a whole utterance, independent of what this decoder saw before."""
    decoder = load_decoder(config)
    # The front end adapts its normalisation across utterances; resetting it makes a region's text the same
    # whichever worker decodes it and whatever it decoded before.
    decoder.reinit_feat()
    decoder.start_utt()
    if pcm16:
        decoder.process_raw(pcm16, False, True)
    decoder.end_utt()
    words = _words(decoder, offset_s)
    text = " ".join(word.word for word in words)
    end_s = offset_s + len(pcm16) / 2 / ENGINE_RATE_HZ
    avg_logprob = float(np.mean([math.log(max(w.confidence, 1e-6)) for w in words])) if words else 0.0
    return Segment(start=offset_s, end=end_s, text=text, words=tuple(words), avg_logprob=avg_logprob)


def _words(decoder: Any, offset_s: float) -> list[Word]:
    frame_rate = int(decoder.config["frate"])
    words = []
    for seg in decoder.seg() or ():
        token: str = seg.word
        if token.startswith(("<", "[", "+")):
            continue
        words.append(
            Word(
                word=token.split("(", 1)[0],
                start=round(offset_s + seg.start_frame / frame_rate, 3),
                end=round(offset_s + (seg.end_frame + 1) / frame_rate, 3),
                confidence=round(min(1.0, max(0.0, float(seg.prob))), 4),
            )
        )
    return words


@dataclass(slots=True)
class _StreamState:
    # The live pass's own decoder (about 90 MB), made once the first utterance is long enough to decode.
    decoder: Any = None
    samples_seen: int = 0
    utterance_start_sample: int | None = None
    last_partial: str = ""
    utterance_pcm: bytearray = field(default_factory=bytearray)
    decoding: bool = False


def stream_open(config: PocketsphinxConfig, stream_id: str) -> None:
    """Create the state of a live stream in this worker."""
    _streams[stream_id] = _StreamState()


def stream_feed(config: PocketsphinxConfig, stream_id: str, pcm16: bytes) -> list[EngineResult]:
    """Decode more audio of a live stream; return a Partial when the hypothesis changed."""
    state = _streams[stream_id]
    if not pcm16:
        return []
    results: list[EngineResult] = []
    if len(state.utterance_pcm) + len(pcm16) > MAX_REGION_S * ENGINE_RATE_HZ * 2:
        # Speech with no pause long enough to end it is cut where one pass still decodes it well.
        results = stream_finalize(config, stream_id)
    if state.utterance_start_sample is None:
        state.utterance_start_sample = state.samples_seen
        state.last_partial = ""
        state.decoding = False
    state.samples_seen += len(pcm16) // 2
    state.utterance_pcm += pcm16
    if state.decoding:
        state.decoder.process_raw(pcm16, False, False)
    elif len(state.utterance_pcm) >= PRIME_S * ENGINE_RATE_HZ * 2:
        if state.decoder is None:
            state.decoder = _new_decoder(config)
        # Feature normalisation starts from the utterance's own first stretch rather than a generic guess.
        state.decoder.set_cmn(_cepstral_mean(config, bytes(state.utterance_pcm)))
        state.decoder.start_utt()
        state.decoder.process_raw(bytes(state.utterance_pcm), False, False)
        state.decoding = True
    else:
        return results
    hypothesis = state.decoder.hyp()
    text = hypothesis.hypstr if hypothesis is not None else ""
    if not text or text == state.last_partial:
        return results
    state.last_partial = text
    start_s = state.utterance_start_sample / ENGINE_RATE_HZ
    return [*results, Partial(text=text, start=start_s, end=state.samples_seen / ENGINE_RATE_HZ)]


def _cepstral_mean(config: PocketsphinxConfig, pcm16: bytes) -> str:
    decoder = load_decoder(config)
    decoder.reinit_feat()
    decoder.start_utt()
    decoder.process_raw(pcm16, True, True)
    decoder.end_utt()
    return str(decoder.get_cmn(False))


def stream_finalize(config: PocketsphinxConfig, stream_id: str) -> list[EngineResult]:
    """End the current utterance of a live stream and return its Final, if it had words.

    The live pass normalises features as audio arrives, which guesses badly at the start of a stream; the
    Final comes from a second, whole-utterance pass, as one-shot decoding does.
    """
    state = _streams[stream_id]
    if state.utterance_start_sample is None:
        return []
    start_s = state.utterance_start_sample / ENGINE_RATE_HZ
    was_decoding, state.decoding = state.decoding, False
    if was_decoding:
        state.decoder.end_utt()
    state.utterance_start_sample = None
    pcm, state.utterance_pcm = bytes(state.utterance_pcm), bytearray()
    words = list(decode_region(config, pcm, start_s).words) if _audible(pcm) else []
    if not words:
        return []
    text = " ".join(word.word for word in words)
    return [Final(text=text, start=start_s, end=state.samples_seen / ENGINE_RATE_HZ, words=tuple(words))]


def _audible(pcm16: bytes) -> bool:
    """Whether the audio rises above near-digital silence (which the decoder would still fill with words)."""
    return bool(pcm16) and int(np.abs(np.frombuffer(pcm16, dtype="<i2")).max()) >= SILENCE_PEAK


def stream_close(stream_id: str) -> None:
    """Forget a live stream's decoder."""
    _streams.pop(stream_id, None)


class PocketsphinxStream:
    """An incremental pocketsphinx decode whose decoder lives in one worker process."""

    def __init__(self, config: PocketsphinxConfig, pool: WorkerPool) -> None:
        self._config = config
        self._pool = pool
        self._id = uuid.uuid4().hex
        self._worker: int | None = None
        self._results: asyncio.Queue[EngineResult | None] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._closed = False

    async def _ensure_open(self) -> int:
        if self._worker is None:
            worker = self._pool.pin_stream()
            try:
                await self._pool.run_on(worker, stream_open, self._config, self._id)
            except BaseException:
                self._pool.unpin_stream(worker)
                raise
            self._worker = worker
        return self._worker

    async def send(self, audio: Audio) -> None:
        """Feed more audio; any new Partial is queued on `results()`."""
        async with self._lock:
            if self._closed:
                raise EngineError("the stream is closed")
            worker = await self._ensure_open()
            for result in await self._pool.run_on(worker, stream_feed, self._config, self._id, audio.pcm16()):
                self._results.put_nowait(result)

    async def finalize(self) -> None:
        """Turn the pending utterance into a Final, then mark the flush."""
        async with self._lock:
            if self._closed:
                return
            if self._worker is not None:
                for result in await self._pool.run_on(self._worker, stream_finalize, self._config, self._id):
                    self._results.put_nowait(result)
            self._results.put_nowait(Flushed())

    async def close(self) -> None:
        """Finalize, release the worker-side decoder and end `results()`."""
        if self._closed:
            return
        await self.finalize()
        async with self._lock:
            self._closed = True
            if self._worker is not None:
                try:
                    await self._pool.run_on(self._worker, stream_close, self._id)
                finally:
                    self._pool.unpin_stream(self._worker)
            self._results.put_nowait(None)

    async def results(self) -> AsyncIterator[EngineResult]:
        """Partial, Final and Flushed results until the stream is closed."""
        while (result := await self._results.get()) is not None:
            yield result


class UtteranceStream:
    """A live stream without interim results: each utterance is decoded whole, by whichever worker is free.

    The audio waits here rather than in a worker, so a session costs no worker calls until it finalizes, and
    its decodes spread over every worker instead of queueing behind the sessions pinned to one.
    """

    def __init__(self, config: PocketsphinxConfig, pool: WorkerPool) -> None:
        self._config = config
        self._pool = pool
        self._utterance = bytearray()
        self._utterance_start_sample = 0
        self._samples_seen = 0
        self._results: asyncio.Queue[EngineResult | None] = asyncio.Queue()
        self._closed = False

    async def send(self, audio: Audio) -> None:
        """Keep more audio of the current utterance (cut and decoded at 30 s without a pause)."""
        if self._closed:
            raise EngineError("the stream is closed")
        pcm16 = audio.pcm16()
        if len(self._utterance) + len(pcm16) > MAX_REGION_S * ENGINE_RATE_HZ * 2:
            await self._decode_utterance()
        if not self._utterance:
            self._utterance_start_sample = self._samples_seen
        self._utterance += pcm16
        self._samples_seen += len(pcm16) // 2

    async def _decode_utterance(self) -> None:
        pcm, self._utterance = bytes(self._utterance), bytearray()
        if not _audible(pcm):
            return
        start_s = self._utterance_start_sample / ENGINE_RATE_HZ
        segment = await self._pool.run(decode_region, self._config, pcm, start_s)
        if segment.words:
            end_s = self._samples_seen / ENGINE_RATE_HZ
            self._results.put_nowait(Final(segment.text, start_s, end_s, segment.words))

    async def finalize(self) -> None:
        """Decode the utterance so far into a Final, then mark the flush."""
        if self._closed:
            return
        await self._decode_utterance()
        self._results.put_nowait(Flushed())

    async def close(self) -> None:
        """Finalize, then end `results()`."""
        if self._closed:
            return
        await self.finalize()
        self._closed = True
        self._results.put_nowait(None)

    async def results(self) -> AsyncIterator[EngineResult]:
        """Final and Flushed results until the stream is closed."""
        while (result := await self._results.get()) is not None:
            yield result
