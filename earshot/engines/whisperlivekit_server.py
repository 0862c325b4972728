"""One WhisperLiveKit server as the engine and its streams see it: where it is, and its gate of open streams.

Each connection holds a model's state on the server, so a per-server gate lets at most `max_streams`
connections run on one WhisperLiveKit URL at once (models sharing a URL and limit share the gate).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from earshot.engines.base import UpstreamError
from earshot.engines.provider_io import websocket_url
from earshot.engines.spec import ModelSpec

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
