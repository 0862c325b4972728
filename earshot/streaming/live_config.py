"""A live session's configuration (input rate, turn detection, limits) and the clock its limits run on."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from earshot.audio.pcm import ENGINE_RATE_HZ
from earshot.audio.vad import VadParams

Expiry = Literal["idle_timeout", "max_duration"]


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """How a session hears its caller: input rate, turn detection (None = manual commits), limits."""

    input_rate_hz: int = ENGINE_RATE_HZ
    vad: VadParams | None = field(default_factory=VadParams)
    idle_timeout_s: float = 10.0
    max_duration_s: float = 3600.0
    # A pause this long may be the end of the turn: the engine starts its final decode then, so the turn's
    # text is ready about when the VAD ends it (a voice agent answers sooner); the decode is dropped if the
    # speech goes on. None: the final decode starts when the turn ends.
    prepare_final_after_ms: int | None = None


class SessionClock:
    """When a session started and last heard from its caller, against its idle and duration limits."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started_at = self._last_activity = clock()

    def touch(self) -> None:
        """The caller did something (any message counts against the idle timeout)."""
        self._last_activity = self._clock()

    def expired(self, limits: LiveConfig) -> Expiry | None:
        """Which limit the session has run into, if any: no activity for too long, or too long in all."""
        now = self._clock()
        if now - self._last_activity >= limits.idle_timeout_s:
            return "idle_timeout"
        if now - self._started_at >= limits.max_duration_s:
            return "max_duration"
        return None
