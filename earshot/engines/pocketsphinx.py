"""pocketsphinx: the offline default engine; its en-US model ships inside the PyPI wheel.

One-shot audio is split at pauses by pocketsphinx's endpointer, and each speech region is decoded as its own
utterance in a worker process, so regions decode on every core at once and come back in order. Live streams
(`pocketsphinx_live.py`) decode each utterance the same way, with the decoders of `pocketsphinx_decode.py`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.base import Segment, TranscribeOptions, live_sessions_for
from earshot.engines.pocketsphinx_decode import MAX_REGION_S, PocketsphinxConfig, decode_region, warm_up
from earshot.engines.pocketsphinx_live import PocketsphinxStream, UtteranceStream
from earshot.engines.workers import WorkerPool

# Speech regions: the endpointer decides on a short window so a single spoken word counts; regions are
# padded so that word edges reach the decoder whole.
REGION_PAD_S = 0.25
ENDPOINTER_WINDOW_S = 0.15
ENDPOINTER_RATIO = 0.8
LIVE_COST_MARGIN = 3.0


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
        if options.interim_results:
            return PocketsphinxStream(self._config, self._pool)
        return UtteranceStream(self._config, self._pool)


def speech_regions(
    audio: Audio, window_s: float = ENDPOINTER_WINDOW_S, ratio: float = ENDPOINTER_RATIO
) -> list[tuple[float, float]]:
    """Start and end times of the speech in `audio`, padded, merged where they touch, split when too long."""
    # Imported where used, as in pocketsphinx_decode.py: importing this module loads no C extension.
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
