"""How much live work each model can carry in this server process, and the sessions holding it.

A model's live limit is the catalog's `max_live_sessions` when set, else what its engine measured of itself at
start-up (a local engine times a decode on its workers), else none (a provider's own limits apply). A session
holds one place from its handshake to its end; past the limit a new session is refused (or moved to a fallback
that has room), so the sessions already admitted stay real-time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from earshot.engines.base import Engine, MeasuresCapacity

# A refused caller is told to come back after about one phrase's worth of sessions ending.
LIVE_RETRY_AFTER_S = 5
# How long a new session waits for a place before it is refused: a client that reconnects right after closing
# gets the place its old session is giving back.
LIVE_PLACE_WAIT_S = 2.0


def measured_live_sessions(engine: Engine) -> int | None:
    """The live sessions an engine says it can keep real-time (None: it doesn't know, or has no bound)."""
    if isinstance(engine, MeasuresCapacity):
        return engine.live_capacity()
    return None


@dataclass(slots=True)
class LiveCapacity:
    """One model's live places in this process: its limit, how many are held, and refusals so far."""

    model_id: str
    configured: int | None
    measured: Callable[[], int | None]
    refused: int = 0
    _holders: set[object] = field(default_factory=set)

    @property
    def held(self) -> int:
        """Live places held now."""
        return len(self._holders)

    @property
    def limit(self) -> int | None:
        """The most live sessions at once (None: unbounded)."""
        return self.configured if self.configured is not None else self.measured()

    def try_take(self, holder: object) -> bool:
        """Take a place for `holder` if one is free; whether it got one."""
        limit = self.limit
        if limit is not None and self.held >= limit:
            return False
        self._holders.add(holder)
        return True

    def release(self, holder: object) -> None:
        """Give back `holder`'s place (again is harmless)."""
        self._holders.discard(holder)


def live_busy_message(model_id: str, retry_after_s: int = LIVE_RETRY_AFTER_S) -> str:
    """What a session refused for want of live places is told, with when to try again."""
    return f"model {model_id!r} is serving as many live sessions as it can; try again in {retry_after_s} s"
