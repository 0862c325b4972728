"""WhisperLiveKit: a self-hosted streaming server (`WS /asr`), for live streams and, by streaming, one-shot.

Each connection holds a model's state on the server, so a per-server gate lets at most `max_streams`
connections run on one WhisperLiveKit URL at once (models sharing a URL and limit share the gate); a
stream waits up to `gate_wait_s` for a slot, then fails as busy. Uploads are paced against the server's
reported progress (whisperlivekit_wire.py), so one-shot audio takes about its own duration, and its text
comes out as the server commits it. Catalog `options`: `max_streams`, `gate_wait_s`, `max_lead_s`,
`finalize_grace_s`, `ping_interval_s`, `ping_timeout_s`, `chunk_s`, `language`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import numpy as np

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.base import EngineError, Segment, TranscribeOptions
from earshot.engines.results import Final
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
        """Stream the buffer through `/asr` as fast as pacing allows, yielding each stretch of text as the
        server commits it (the words it holds uncommitted come last, once it has heard everything)."""
        stream = self.open_stream(TranscribeOptions(language=options.language, interim_results=False))
        upload = asyncio.create_task(self._upload(stream, audio))
        try:
            async for result in stream.results():
                if isinstance(result, Final) and result.text.strip():
                    end = max(result.start, min(result.end, audio.duration_s))
                    yield Segment(result.start, end, result.text.strip(), words=result.words)
            await upload
        finally:
            if not upload.done():
                # The caller stopped reading, or the stream failed: drop the connection, stop sending.
                await stream.abort()
            upload.cancel()
            with contextlib.suppress(asyncio.CancelledError, EngineError):
                await upload

    async def _upload(self, stream: WhisperLiveKitStream, audio: Audio) -> None:
        """Send the audio at the pace the server allows, then close (on any failure: abort) the stream."""
        step = max(1, round(self.config.chunk_s * ENGINE_RATE_HZ))
        try:
            for at in range(0, len(audio.samples), step):
                await stream.send(Audio(np.asarray(audio.samples[at : at + step])))
        except BaseException:
            await stream.abort()
            raise
        await stream.close()


def build(model_id: str, spec: ModelSpec, pool: WorkerPool) -> WhisperLiveKitEngine:
    """The engine for one catalog entry (`engine: whisperlivekit`)."""
    return WhisperLiveKitEngine(WhisperLiveKitConfig.from_spec(model_id, spec), name=model_id)
