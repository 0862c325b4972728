"""pocketsphinx live streams: one utterance at a time, its Final from a whole-utterance pass.

With interim results, a stream keeps a decoder of its own in one worker and decodes incrementally for its
Partials; either way each utterance's Final comes from decoding it whole, as one-shot transcription does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines import pocketsphinx_decode as decoding
from earshot.engines.base import EngineError
from earshot.engines.pinned_stream import PinnedStream
from earshot.engines.pocketsphinx_decode import (
    PocketsphinxConfig,
    decode_region,
    load_decoder,
    new_decoder,
)
from earshot.engines.result_queue import ResultQueue
from earshot.engines.results import EngineResult, Final, Flushed, Partial
from earshot.engines.workers import WorkerPool

# A live utterance starts decoding once this much is in, so its features are normalised by its own audio.
PRIME_S = 0.5
# Peak sample value under which an utterance is taken as silence (about -54 dBFS).
SILENCE_PEAK = 64

# Worker-process side: each live stream's state, by stream id, and live decoders no stream holds now. A
# decoder is about 90 MB of C memory that the allocator rarely gives back to the system once freed, so ended
# streams hand theirs on instead: a worker holds as many as it ever ran streams at once, however many ended.
_streams: dict[str, _StreamState] = {}
_spare_decoders: dict[PocketsphinxConfig, list[Any]] = {}


@dataclass(slots=True)
class _StreamState:
    # The live pass's own decoder (about 90 MB), made once the first utterance is long enough to decode.
    decoder: Any = None
    samples_seen: int = 0
    utterance_start_sample: int | None = None
    last_partial: str = ""
    utterance_pcm: bytearray = field(default_factory=bytearray)
    decoding: bool = False
    config: PocketsphinxConfig | None = None


def stream_open(config: PocketsphinxConfig, stream_id: str) -> None:
    """Create the state of a live stream in this worker."""
    _streams[stream_id] = _StreamState()


def stream_feed(config: PocketsphinxConfig, stream_id: str, pcm16: bytes) -> list[EngineResult]:
    """Decode more audio of a live stream; return a Partial when the hypothesis changed."""
    state = _streams[stream_id]
    if not pcm16:
        return []
    results: list[EngineResult] = []
    if _too_long(state.utterance_pcm, pcm16):
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
            spares = _spare_decoders.get(config)
            state.decoder = spares.pop() if spares else new_decoder(config)
            state.config = config
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
    if not _audible(pcm):
        return []
    return decode_utterance(config, pcm, start_s, state.samples_seen / ENGINE_RATE_HZ)


def decode_utterance(
    config: PocketsphinxConfig, pcm16: bytes, start_s: float, end_s: float
) -> list[EngineResult]:
    """One whole utterance decoded as one-shot decoding does: its Final, or nothing when it had no words."""
    segment = decode_region(config, pcm16, start_s)
    return [Final(segment.text, start_s, end_s, segment.words)] if segment.words else []


def _too_long(utterance: bytearray, pcm16: bytes) -> bool:
    """Whether `pcm16` takes an utterance past what one pass decodes well: unpaused speech is cut there."""
    return len(utterance) + len(pcm16) > decoding.MAX_REGION_S * ENGINE_RATE_HZ * 2


def _audible(pcm16: bytes) -> bool:
    """Whether the audio rises above near-digital silence (which the decoder would still fill with words)."""
    return bool(pcm16) and int(np.abs(np.frombuffer(pcm16, dtype="<i2")).max()) >= SILENCE_PEAK


def stream_close(stream_id: str) -> None:
    """Forget a live stream, keeping its decoder for the next stream."""
    state = _streams.pop(stream_id, None)
    if state is None or state.decoder is None or state.config is None:
        return
    if state.decoding:
        state.decoder.end_utt()
    _spare_decoders.setdefault(state.config, []).append(state.decoder)


class PocketsphinxStream(PinnedStream):
    """An incremental pocketsphinx decode whose decoder lives in one worker process."""

    def __init__(self, config: PocketsphinxConfig, pool: WorkerPool) -> None:
        super().__init__(pool)
        self._config = config

    async def _open_on(self, worker: int) -> None:
        await self._pool.run_on(worker, stream_open, self._config, self._id)

    async def _feed_on(self, worker: int, pcm16: bytes) -> list[EngineResult]:
        return await self._pool.run_on(worker, stream_feed, self._config, self._id, pcm16)

    async def _finalize_on(self, worker: int) -> list[EngineResult]:
        return await self._pool.run_on(worker, stream_finalize, self._config, self._id)

    async def _close_on(self, worker: int) -> None:
        await self._pool.run_on(worker, stream_close, self._id)


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
        self._results = ResultQueue()
        self._closed = False

    async def send(self, audio: Audio) -> None:
        """Keep more audio of the current utterance (cut and decoded at 30 s without a pause)."""
        if self._closed:
            raise EngineError("the stream is closed")
        pcm16 = audio.pcm16()
        if _too_long(self._utterance, pcm16):
            await self._decode_utterance()
        if not self._utterance:
            self._utterance_start_sample = self._samples_seen
        self._utterance += pcm16
        self._samples_seen += len(pcm16) // 2

    async def _decode_utterance(self) -> None:
        pcm, self._utterance = bytes(self._utterance), bytearray()
        if not _audible(pcm):
            return
        start_s, end_s = self._utterance_start_sample / ENGINE_RATE_HZ, self._samples_seen / ENGINE_RATE_HZ
        self._results.put_all(await self._pool.run(decode_utterance, self._config, pcm, start_s, end_s))

    async def finalize(self) -> None:
        """Decode the utterance so far into a Final, then mark the flush."""
        if self._closed:
            return
        await self._decode_utterance()
        self._results.put(Flushed())

    async def close(self) -> None:
        """Finalize, then end `results()`."""
        if self._closed:
            return
        await self.finalize()
        self._closed = True
        self._results.end()

    def results(self) -> AsyncIterator[EngineResult]:
        """Final and Flushed results until the stream is closed."""
        return self._results.results()
