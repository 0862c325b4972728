"""Pacing a voice agent's audio: sent at most `lead_ms` ahead of real time, so a barge-in leaves little queued
on the client to skip."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Playback:
    """Keeps the audio sent at most `lead_ms` ahead of real time."""

    def __init__(self, clock: Callable[[], float], lead_ms: int) -> None:
        self.clock = clock
        self.lead_ms = lead_ms
        self._started_at: float | None = None
        self._sent_ms = 0

    def sent(self, ms: int) -> None:
        if self._started_at is None:
            self._started_at = self.clock()
        self._sent_ms += ms

    async def wait_for_room(self) -> None:
        if self._started_at is None:
            return
        ahead_s = (self._sent_ms - self.lead_ms) / 1000 - (self.clock() - self._started_at)
        if ahead_s > 0:
            await asyncio.sleep(ahead_s)
