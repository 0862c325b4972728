"""Vosk (Kaldi): a model directory loaded in every worker process; native streaming, words with confidence.

Needs the `vosk` extra (`pip install earshot[vosk]`); without it this module does not import, and the router
refuses the catalog at start-up. A live stream keeps its recognizer in one worker (`WorkerPool.pin_stream`);
one-shot audio is recognised by whichever worker is free. The JSON-to-result mapping is `vosk_results.py`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import vosk
from pydantic import BaseModel, ConfigDict, Field

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.base import EngineError, Segment, TranscribeOptions
from earshot.engines.pinned_stream import PinnedStream
from earshot.engines.results import EngineResult, Final
from earshot.engines.spec import CatalogError, ModelSpec
from earshot.engines.vosk_results import RecognizerFeed, segment_of
from earshot.engines.workers import WorkerPool

# One-shot audio reaches the recognizer in pieces this long, as a live stream's would.
ONE_SHOT_CHUNK_SAMPLES = ENGINE_RATE_HZ // 4


class VoskOptions(BaseModel):
    """A catalog entry's `options` for `engine: vosk`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="A Vosk model directory (unpacked from alphacephei.com/vosk/models)")
    language: str = Field(default="en", description="The model's language")
    grammar: tuple[str, ...] | None = Field(default=None, description="Phrases to restrict recognition to")


@dataclass(frozen=True, slots=True)
class VoskConfig:
    """How a worker builds recognizers; hashable, so each worker keeps one model per directory."""

    model: str
    grammar: tuple[str, ...] | None = None


def build(model_id: str, spec: ModelSpec, pool: WorkerPool) -> VoskEngine:
    """The engine for one catalog entry (called by the router)."""
    options = spec.parsed_options(model_id, VoskOptions)
    directory = Path(options.model).expanduser()
    if not directory.is_dir():
        raise CatalogError(f"model {model_id!r} (vosk): options.model {options.model!r} is not a directory")
    return VoskEngine(VoskConfig(str(directory), options.grammar), pool, options.language, name=model_id)


class VoskEngine:
    """Vosk recognition in the shared worker pool."""

    def __init__(
        self, config: VoskConfig, pool: WorkerPool, language: str = "en", name: str = "vosk"
    ) -> None:
        self.name = name
        self.ready = False
        self.language = language
        self._config = config
        self._pool = pool

    async def start(self) -> None:
        """Load the model in every worker so the first request pays no start-up cost."""
        await self._pool.on_every_worker(warm_up, self._config)
        self.ready = True

    async def stop(self) -> None:
        """Nothing to release: the models live as long as the worker processes."""
        self.ready = False

    async def transcribe_segments(self, audio: Audio, options: TranscribeOptions) -> AsyncIterator[Segment]:
        """Recognise the whole buffer in one worker; one segment per utterance Vosk found."""
        for segment in await self._pool.run(recognize, self._config, audio.pcm16()):
            yield segment

    def open_stream(self, options: TranscribeOptions) -> VoskStream:
        """A native incremental recognition pinned to one worker."""
        return VoskStream(self._config, self._pool, options.interim_results)


class VoskStream(PinnedStream):
    """A Vosk recognizer living in one worker process: Partials as it hears, Finals at utterance ends."""

    def __init__(self, config: VoskConfig, pool: WorkerPool, interim_results: bool) -> None:
        super().__init__(pool)
        self._config = config
        self._interim_results = interim_results

    async def _open_on(self, worker: int) -> None:
        await self._pool.run_on(worker, stream_open, self._config, self._id, self._interim_results)

    async def _feed_on(self, worker: int, pcm16: bytes) -> list[EngineResult]:
        return await self._pool.run_on(worker, stream_feed, self._id, pcm16)

    async def _finalize_on(self, worker: int) -> list[EngineResult]:
        return await self._pool.run_on(worker, stream_finalize, self._id)

    async def _close_on(self, worker: int) -> None:
        await self._pool.run_on(worker, stream_close, self._id)


# --- worker-process side: models per directory, recognizers per live stream ---

_models: dict[str, Any] = {}
_streams: dict[str, RecognizerFeed] = {}


def warm_up(config: VoskConfig) -> None:
    """Load this worker's model now rather than on the first request."""
    load_model(config)


def load_model(config: VoskConfig) -> Any:
    """This worker's model for `config`, loaded on first use."""
    model = _models.get(config.model)
    if model is None:
        vosk.SetLogLevel(-1)
        try:
            model = vosk.Model(config.model)
        except Exception as e:  # vosk raises a bare Exception when the directory holds no model
            raise EngineError(f"vosk could not load a model from {config.model!r}") from e
        _models[config.model] = model
    return model


def new_recognizer(config: VoskConfig) -> Any:
    """A recognizer at 16 kHz that reports words with their confidence."""
    model = load_model(config)
    if config.grammar:
        recognizer = vosk.KaldiRecognizer(model, ENGINE_RATE_HZ, json.dumps(list(config.grammar)))
    else:
        recognizer = vosk.KaldiRecognizer(model, ENGINE_RATE_HZ)
    recognizer.SetWords(True)
    return recognizer


def recognize(config: VoskConfig, pcm16: bytes) -> list[Segment]:
    """Recognise a whole buffer with a fresh recognizer; one segment per utterance."""
    feed = RecognizerFeed(new_recognizer(config), interim_results=False)
    chunk_bytes = ONE_SHOT_CHUNK_SAMPLES * 2
    results: list[EngineResult] = []
    for offset in range(0, len(pcm16), chunk_bytes):
        results += feed.feed(pcm16[offset : offset + chunk_bytes])
    results += feed.finalize()
    return [segment_of(result) for result in results if isinstance(result, Final)]


def stream_open(config: VoskConfig, stream_id: str, interim_results: bool) -> None:
    """Create a live stream's recognizer in this worker."""
    _streams[stream_id] = RecognizerFeed(new_recognizer(config), interim_results)


def stream_feed(stream_id: str, pcm16: bytes) -> list[EngineResult]:
    """Recognise more of a live stream's audio."""
    return _streams[stream_id].feed(pcm16)


def stream_finalize(stream_id: str) -> list[EngineResult]:
    """End a live stream's utterance in progress."""
    return _streams[stream_id].finalize()


def stream_close(stream_id: str) -> None:
    """Forget a live stream's recognizer."""
    _streams.pop(stream_id, None)
