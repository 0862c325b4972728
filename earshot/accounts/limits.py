"""Rate limits (requests per minute per key and per client IP) and concurrent-session gates.

Both keep their counters in process by default and in Redis when one is configured, so every worker
sharing that Redis enforces one limit.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from earshot.accounts.errors import RateLimited

# A session that dies without releasing its slot (a crashed worker) frees it after this long.
SESSION_LEASE_S = 3600


class RateLimiter:
    """Moving one-minute windows over named scopes: `key:<id>`, `ip:<bucket>:<address>`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._strategy = MovingWindowRateLimiter(storage)

    async def hit(self, scope: str, per_minute: int) -> None:
        """Count one request in the scope; RateLimited if that goes over `per_minute` (0 = no limit)."""
        if per_minute <= 0:
            return
        item = RateLimitItemPerMinute(per_minute)
        if await self._strategy.hit(item, scope):
            return
        stats = await self._strategy.get_window_stats(item, scope)
        retry_after = math.ceil(stats.reset_time - time.time())
        raise RateLimited(f"rate limit of {per_minute} requests per minute reached", retry_after)


@dataclass(frozen=True, slots=True)
class SessionLease:
    """One held slot of a key's concurrent-session limit."""

    key_id: str
    lease_id: str


class SessionGate(Protocol):
    """Counts a key's concurrent sessions (live sessions and in-flight requests)."""

    async def acquire(self, key_id: str, max_sessions: int) -> SessionLease: ...

    async def release(self, lease: SessionLease) -> None: ...

    async def active(self, key_id: str) -> int: ...


class MemorySessionGate:
    """Session slots counted in this process."""

    def __init__(self) -> None:
        self._held: dict[str, set[str]] = {}

    async def acquire(self, key_id: str, max_sessions: int) -> SessionLease:
        held = self._held.setdefault(key_id, set())
        if len(held) >= max_sessions:
            raise _too_many(max_sessions)
        lease = SessionLease(key_id, uuid.uuid4().hex)
        held.add(lease.lease_id)
        return lease

    async def release(self, lease: SessionLease) -> None:
        self._held.get(lease.key_id, set()).discard(lease.lease_id)

    async def active(self, key_id: str) -> int:
        return len(self._held.get(key_id, ()))


# Drop expired leases, then add one if the key is under its limit: one atomic step in Redis.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class RedisSessionGate:
    """Session slots as leases in a Redis sorted set per key, shared by every worker."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE)

    def _key(self, key_id: str) -> str:
        return f"{self.prefix}:sessions:{key_id}"

    async def acquire(self, key_id: str, max_sessions: int) -> SessionLease:
        lease = SessionLease(key_id, uuid.uuid4().hex)
        now = time.time()
        granted = await self._acquire(
            keys=[self._key(key_id)],
            args=[now, max_sessions, now + SESSION_LEASE_S, lease.lease_id, SESSION_LEASE_S],
        )
        if not granted:
            raise _too_many(max_sessions)
        return lease

    async def release(self, lease: SessionLease) -> None:
        await self.redis.zrem(self._key(lease.key_id), lease.lease_id)

    async def active(self, key_id: str) -> int:
        key = self._key(key_id)
        await self.redis.zremrangebyscore(key, "-inf", time.time())
        return int(await self.redis.zcard(key))


def _too_many(max_sessions: int) -> RateLimited:
    return RateLimited(
        f"this API key already has {max_sessions} session(s) running", retry_after_s=1, concurrency=True
    )


def limit_storage(redis_url: str | None, prefix: str) -> Storage:
    """In-process counters, or Redis's when a URL is given."""
    if redis_url is None:
        return MemoryStorage()
    uri = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
    return RedisStorage(uri, implementation="redispy", key_prefix=f"{prefix}:limits")
