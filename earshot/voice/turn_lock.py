"""One turn at a time per session, across channels and workers.

In one process a set of held session ids does; with Redis, a key per session set with `SET NX PX` and a
random token, renewed while the turn runs and deleted only by its holder (compare-and-delete), so a turn
that ends (or whose client leaves) frees the session at once and a crashed worker's hold expires by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# A hold not renewed for this long (its worker died) expires; a running turn renews it every third of it.
LOCK_TTL_MS = 15_000

# Delete the key only while it still holds our token; extend it only then, too.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class SessionBusy(Exception):
    """Another turn of the session is running."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id} is busy with another turn; try again when it ends")
        self.session_id = session_id


class TurnLocks(Protocol):
    """Holds a session for one turn; SessionBusy when it is already held."""

    def hold(self, session_id: str) -> contextlib.AbstractAsyncContextManager[None]: ...


class MemoryTurnLocks:
    """Sessions held by turns in this process."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        if session_id in self._held:
            raise SessionBusy(session_id)
        self._held.add(session_id)
        try:
            yield
        finally:
            self._held.discard(session_id)


class RedisTurnLocks:
    """Sessions held by turns in any worker sharing the Redis."""

    def __init__(self, redis: Any, prefix: str, ttl_ms: int = LOCK_TTL_MS) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_ms = ttl_ms
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}:turn:{session_id}"

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        key, token = self._key(session_id), uuid.uuid4().hex
        if not await self.redis.set(key, token, nx=True, px=self.ttl_ms):
            raise SessionBusy(session_id)
        renewing = asyncio.create_task(self._keep(key, token))
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            try:
                await asyncio.shield(self._release(keys=[key], args=[token]))
            except (RedisError, OSError) as e:
                # The hold expires on its own within the TTL.
                log.warning("could not release the turn lock of session %s: %s", session_id, e)

    async def _keep(self, key: str, token: str) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            try:
                if not await self._renew(keys=[key], args=[token, self.ttl_ms]):
                    log.warning("lost the turn lock %s (it expired)", key)
                    return
            except (RedisError, OSError) as e:
                log.warning("could not renew the turn lock %s: %s", key, e)
