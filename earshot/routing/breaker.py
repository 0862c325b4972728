"""A per-provider circuit breaker: stop sending to a provider that keeps failing, try it again later.

Sans-I/O: every call takes the current monotonic time, so tests drive it without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failures; after `reset_s` lets one trial call through."""

    failure_threshold: int
    reset_s: float
    consecutive_failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False

    def state(self, now: float) -> BreakerState:
        """Closed (calls flow), open (calls refused), or half-open (one trial call may go)."""
        if self.opened_at is None:
            return BreakerState.CLOSED
        if now - self.opened_at >= self.reset_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def try_acquire(self, now: float) -> bool:
        """Whether a call may go now; in half-open only the first caller gets the trial."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self.trial_in_flight:
            self.trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        """A call succeeded: close the breaker."""
        self.consecutive_failures = 0
        self.opened_at = None
        self.trial_in_flight = False

    def record_failure(self, now: float) -> None:
        """A call failed transiently: count it, and open (or re-open after a failed trial)."""
        self.consecutive_failures += 1
        if self.trial_in_flight or self.consecutive_failures >= self.failure_threshold:
            self.opened_at = now
        self.trial_in_flight = False

    def release(self) -> None:
        """A call ended neither way (cancelled, or the caller's own error): free the trial slot."""
        self.trial_in_flight = False

    def retry_after_s(self, now: float) -> float:
        """Seconds until the breaker half-opens (0 when it isn't open)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.reset_s - (now - self.opened_at))
