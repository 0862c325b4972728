"""pocketsphinx: the offline default engine; its en-US model ships inside the PyPI wheel.

One-shot audio is split at pauses by pocketsphinx's endpointer, and each speech region is decoded as its own
utterance in a worker process, so regions decode on every core at once and come back in order. Live streams
(`pocketsphinx_live.py`) decode each utterance the same way.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.base import EngineError, Segment, TranscribeOptions, live_sessions_for
from earshot.engines.workers import WorkerPool
from earshot.streaming.events import Word

if TYPE_CHECKING:
    from earshot.engines.pocketsphinx_live import PocketsphinxStream, UtteranceStream

# Speech regions: the endpointer decides on a short window so a single spoken word counts; regions are
# padded so that word edges reach the decoder whole.
REGION_PAD_S = 0.25
ENDPOINTER_WINDOW_S = 0.15
ENDPOINTER_RATIO = 0.8
MAX_REGION_S = 30.0
LIVE_COST_MARGIN = 3.0


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
        self._live_capacity: int | None = None

    async def start(self) -> None:
        """Load the model in every worker so the first request pays no start-up cost; time it for capacity."""
        factors = await self._pool.on_every_worker(warm_up, self._config)
        # Speech costs the search more than the test clip, and a live stream asks for partial hypotheses.
        self._live_capacity = live_sessions_for(self._pool.size, max(factors) * LIVE_COST_MARGIN)
        self.ready = True

    def live_capacity(self) -> int | None:
        """Live sessions the workers keep real-time, from the decode timed at start (None before)."""
        return self._live_capacity

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
        # Imported here: the live streams are built on this module's decoders.
        from earshot.engines.pocketsphinx_live import PocketsphinxStream, UtteranceStream

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


def warm_up(config: PocketsphinxConfig) -> float:
    """Load this worker's decoder now rather than on the first request; its real-time factor on a clip."""
    load_decoder(config)
    rng = np.random.default_rng(0)
    clip_s = 2.0
    noise = (rng.normal(0, 300, round(clip_s * ENGINE_RATE_HZ))).astype(np.int16).tobytes()
    started = time.perf_counter()
    decode_region(config, noise, 0.0)
    return (time.perf_counter() - started) / clip_s


def load_decoder(config: PocketsphinxConfig) -> Any:
    """This worker's decoder for `config`, created on first use."""
    decoder = _decoders.get(config)
    if decoder is None:
        decoder = new_decoder(config)
        _decoders[config] = decoder
    return decoder


def new_decoder(config: PocketsphinxConfig) -> Any:
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
    words = decoded_words(decoder, offset_s)
    text = " ".join(word.word for word in words)
    end_s = offset_s + len(pcm16) / 2 / ENGINE_RATE_HZ
    avg_logprob = float(np.mean([math.log(max(w.confidence, 1e-6)) for w in words])) if words else 0.0
    return Segment(start=offset_s, end=end_s, text=text, words=tuple(words), avg_logprob=avg_logprob)


def decoded_words(decoder: Any, offset_s: float) -> list[Word]:
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
