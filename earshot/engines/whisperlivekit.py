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
from dataclasses import dataclass, field

import numpy as np

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.base import Segment, TranscribeOptions, UpstreamError
from earshot.engines.provider_io import websocket_url
from earshot.engines.whisperlivekit_live import WhisperLiveKitStream
from earshot.engines.workers import WorkerPool
from earshot.routing.catalog import ModelSpec

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True, slots=True)
class WhisperLiveKitConfig:
    """Where the server is and how to talk to it."""

    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    language: str = "en"
    max_streams: int = 4
    gate_wait_s: float = 10.0
    max_lead_s: float = 2.0
    finalize_grace_s: float = 1.0
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    chunk_s: float = 0.1
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0

    @classmethod
    def from_spec(cls, model_id: str, spec: ModelSpec) -> WhisperLiveKitConfig:
        """Build from a catalog entry (a key is optional: WhisperLiveKit itself checks none)."""
        options = spec.options
        return cls(
            base_url=(spec.base_url or DEFAULT_BASE_URL).rstrip("/"),
            api_key=spec.api_key(model_id) if spec.api_key_env else None,
            language=str(options.get("language", "en")),
            max_streams=int(options.get("max_streams", spec.max_concurrency or 4)),
            gate_wait_s=float(options.get("gate_wait_s", 10.0)),
            max_lead_s=float(options.get("max_lead_s", 2.0)),
            finalize_grace_s=float(options.get("finalize_grace_s", 1.0)),
            ping_interval_s=_seconds_or_none(options.get("ping_interval_s", 20.0)),
            ping_timeout_s=_seconds_or_none(options.get("ping_timeout_s", 20.0)),
            chunk_s=float(options.get("chunk_s", 0.1)),
            timeout_s=spec.timeout_s,
            connect_timeout_s=spec.connect_timeout_s,
        )

    @property
    def url(self) -> str:
        """The `/asr` socket URL."""
        return f"{websocket_url(self.base_url)}/asr"

    @property
    def headers(self) -> dict[str, str]:
        """A bearer token for a proxy in front of the server, when the catalog names one."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def _seconds_or_none(value: object) -> float | None:
    return None if value is None or value is False else float(str(value))


class StreamGate:
    """At most `limit` open streams on one server; the rest wait up to `wait_s`, then fail as busy."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._slots = asyncio.Semaphore(limit)

    async def acquire(self, wait_s: float) -> None:
        """Take a slot, or raise a transient UpstreamError (503) after `wait_s`."""
        try:
            await asyncio.wait_for(self._slots.acquire(), wait_s)
        except TimeoutError as e:
            busy = f"the upstream server has no free stream (limit {self.limit})"
            raise UpstreamError(busy, transient=True, status=503, retry_after_s=1.0) from e
        self.active += 1

    def release(self) -> None:
        """Give a slot back."""
        self.active -= 1
        self._slots.release()


# One gate per server URL (and event loop), shared by the catalog models pointing at that server with the
# same limit: the servers, not the models, are what hold one model state per connection.
_gates: dict[tuple[str, int, int], StreamGate] = {}


def gate_for(url: str, limit: int) -> StreamGate:
    """The gate of one WhisperLiveKit server for models that allow it `limit` streams."""
    key = (url, limit, id(asyncio.get_running_loop()))
    if key not in _gates:
        _gates[key] = StreamGate(limit)
    return _gates[key]


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
