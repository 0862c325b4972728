"""The watchdog every live connection has: revocation, key checks, server drain, idle and maximum duration.

Shared by the local live socket shell and the realtime relay, so both cut a session off the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from earshot.api.admission import Admission
from earshot.api.context import Gateway
from earshot.api.live.actions import EndReason
from earshot.streaming.live_config import Expiry

WATCH_INTERVAL_S = 0.2
KEY_CHECK_INTERVAL_S = 0.4


class SessionWatch:
    """Calls `end(reason, message)` when the key is revoked, the server drains or the session expires."""

    def __init__(
        self,
        gateway: Gateway,
        admission: Admission,
        end: Callable[[EndReason, str], None],
        expired: Callable[[], Expiry | None],
    ) -> None:
        self._gateway = gateway
        self._key_id = admission.key_id
        self._end = end
        self._expired = expired
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        """Listen for revocations and start the periodic checks."""
        self._unsubscribe = self._gateway.accounts.revocations.subscribe(self._on_revoked)
        self._task = asyncio.create_task(self._watch())

    def stop(self) -> None:
        """Stop listening and checking."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        keyring = self._gateway.accounts.keyring
        since_key_check = 0.0
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            if self._gateway.draining.is_set():
                self._end("shutdown", "the server is shutting down; reconnect to go on")
            expiry = self._expired()
            if expiry == "idle_timeout":
                self._end("idle_timeout", "the session was idle for too long")
            elif expiry == "max_duration":
                self._end("max_duration", "the session reached its maximum duration")
            since_key_check += WATCH_INTERVAL_S
            if self._key_id is not None and since_key_check >= KEY_CHECK_INTERVAL_S:
                since_key_check = 0.0
                if not await keyring.is_active(self._key_id):
                    self._end("revoked", "this API key has been revoked")

    def _on_revoked(self, key_id: str) -> None:
        if key_id == self._key_id:
            self._end("revoked", "this API key has been revoked")
