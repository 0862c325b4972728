"""WhisperLiveKit: a self-hosted streaming server (`WS /asr`), for live streams and, by streaming, one-shot.

Each connection holds a model's state on the server, so a per-server gate lets at most `max_streams`
connections run on one WhisperLiveKit URL at once (models sharing a URL and limit share the gate); a
stream waits up to `gate_wait_s` for a slot, then fails as busy. Uploads are paced against the server's
reported progress (whisperlivekit_wire.py), so one-shot audio takes about its own duration. Catalog
`options`: `max_streams`, `gate_wait_s`, `max_lead_s`, `finalize_grace_s`, `ping_interval_s`,
`ping_timeout_s`, `chunk_s`, `language`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import numpy as np

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.base import Segment, TranscribeOptions, UpstreamError
from earshot.engines.spec import ModelSpec
from earshot.engines.whisperlivekit_live import WhisperLiveKitStream
from earshot.engines.whisperlivekit_server import WhisperLiveKitConfig, gate_for
from earshot.engines.workers import WorkerPool

log = logging.getLogger(__name__)


class WhisperLiveKitEngine:
    """A WhisperLiveKit server: live streams over `/asr`, and one-shot audio streamed through it."""

    def __init__(self, config: WhisperLiveKitConfig, name: str = "whisperlivekit") -> None:
        self.name = name
        self.language = config.language
        self.ready = False
        self.config = config

    async def start(self) -> None:
        """Nothing to open ahead: each stream has its own connection."""
        self.ready = True

    async def stop(self) -> None:
        """Streams close themselves."""
        self.ready = False

    def open_stream(self, options: TranscribeOptions) -> WhisperLiveKitStream:
        """A live stream; it takes a slot of the server's gate and connects with the first audio."""
        return WhisperLiveKitStream(self.config, options, gate_for)

    async def transcribe_segments(self, audio: Audio, options: TranscribeOptions) -> AsyncIterator[Segment]:
        """Stream the buffer through `/asr` as fast as pacing allows; yield the server's final lines."""
        stream = self.open_stream(TranscribeOptions(language=options.language, interim_results=False))
        step = max(1, round(self.config.chunk_s * ENGINE_RATE_HZ))
        drain = asyncio.create_task(_drain(stream))
        try:
            for at in range(0, len(audio.samples), step):
                await stream.send(Audio(np.asarray(audio.samples[at : at + step])))
        finally:
            await stream.close()
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
        if stream.error is not None:
            raise stream.error
        for line in stream.final_lines():
            yield Segment(line.start, max(line.start, min(line.end, audio.duration_s)), line.text)


async def _drain(stream: WhisperLiveKitStream) -> None:
    """Read a stream's results so they do not pile up; one-shot uses the final lines instead."""
    with contextlib.suppress(UpstreamError):
        async for _ in stream.results():
            pass


def build(model_id: str, spec: ModelSpec, pool: WorkerPool) -> WhisperLiveKitEngine:
    """The engine for one catalog entry (`engine: whisperlivekit`)."""
    return WhisperLiveKitEngine(WhisperLiveKitConfig.from_spec(model_id, spec), name=model_id)
