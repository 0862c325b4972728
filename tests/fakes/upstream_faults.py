"""What a fake provider should get wrong next: set by a test, read by the fake on its own thread."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Failure:
    """An HTTP error the fake answers instead of doing the work."""

    status: int
    retry_after_s: float | None = None


@dataclass
class Faults:
    """Faults for one fake: failures for the next requests or handshakes, slow replies, dropped sockets."""

    # Seconds the fake waits before each reply (REST) or each result message (WebSocket).
    delay_s: float = 0.0
    # A WebSocket is closed with 1011 this long after it was accepted.
    close_1011_after_s: float | None = None
    # A WebSocket is closed with 1011 once this many seconds of audio have arrived on it.
    close_1011_after_audio_s: float | None = None
    # Realtime sockets answer each commit with a server_error event instead of a transcript.
    server_error_events: bool = False
    _failures: deque[Failure] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, status: int, times: int = 1, retry_after_s: float | None = None) -> None:
        """Answer the next `times` requests (or socket handshakes) with `status` and the provider's body."""
        with self._lock:
            self._failures.extend(Failure(status, retry_after_s) for _ in range(times))

    def take_failure(self) -> Failure | None:
        """The failure this request should get, if any."""
        with self._lock:
            return self._failures.popleft() if self._failures else None

    def reset(self) -> None:
        """No faults."""
        with self._lock:
            self._failures.clear()
        self.delay_s = 0.0
        self.close_1011_after_s = None
        self.close_1011_after_audio_s = None
        self.server_error_events = False
