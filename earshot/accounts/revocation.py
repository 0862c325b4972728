"""Revocation fan-out: every worker drops a revoked key from its cache and its live sessions hear of it.

With Redis, a revocation is published on a channel every worker listens to, so it lands at once.
Without Redis, the key cache's short lifetime bounds how stale a worker can be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class RevocationFeed:
    """Publishes revocations and tells local listeners (cache, live sessions) about them."""

    def __init__(self, redis: Any | None, prefix: str) -> None:
        self.redis = redis
        self.channel = f"{prefix}:revoked"
        self._listeners: set[Callable[[str], None]] = set()
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(key_id)` on every revocation; returns the unsubscribe function."""
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    async def publish(self, key_id: str) -> None:
        """Announce a revocation to this process and, through Redis, to every other worker."""
        if self.redis is None:
            self._notify(key_id)
            return
        await self.redis.publish(self.channel, key_id)

    def _notify(self, key_id: str) -> None:
        for listener in list(self._listeners):
            listener(key_id)

    async def start(self) -> None:
        """Listen to the shared channel (no-op without Redis)."""
        if self.redis is None:
            return
        subscribed = asyncio.Event()
        self._task = asyncio.create_task(self._listen(subscribed))
        await asyncio.wait_for(subscribed.wait(), timeout=10)

    async def _listen(self, subscribed: asyncio.Event) -> None:
        assert self.redis is not None
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        data = message["data"]
                        self._notify(data.decode() if isinstance(data, bytes) else str(data))
            except (RedisError, OSError) as e:
                # The key cache's lifetime still bounds staleness while Redis is away.
                log.warning("revocation channel lost (%s); resubscribing", e)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
