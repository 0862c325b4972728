"""Rate limits, concurrent-session gates and revocation fan-out, in process and shared through Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis
import redis.asyncio as aioredis
from limits.aio.storage import MemoryStorage

from earshot.accounts.errors import RateLimited
from earshot.accounts.limits import (
    MemorySessionGate,
    RateLimiter,
    RedisSessionGate,
    SessionGate,
    limit_storage,
)
from earshot.accounts.revocation import RevocationFeed
from tests.conftest import REDIS_URL, redis_prefix


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis prefix of this test's own; every key under it is deleted afterwards."""
    name = redis_prefix()
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{name}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
async def clients() -> AsyncIterator[list[aioredis.Redis]]:
    """Two separate Redis clients, as two workers would have."""
    pair = [aioredis.Redis.from_url(REDIS_URL), aioredis.Redis.from_url(REDIS_URL)]
    yield pair
    for client in pair:
        await client.aclose()


def _redis_keys(prefix: str) -> list[bytes]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return list(client.scan_iter(match=f"{prefix}*"))
    finally:
        client.close()


# --- Rate limits ------------------------------------------------------------------------------------


async def _exhaust(limiter: RateLimiter, scope: str, per_minute: int) -> RateLimited:
    for _ in range(per_minute):
        await limiter.hit(scope, per_minute)
    with pytest.raises(RateLimited) as caught:
        await limiter.hit(scope, per_minute)
    return caught.value


def _check_refusal(refusal: RateLimited, per_minute: int) -> None:
    assert 1 <= refusal.retry_after_s <= 60
    assert refusal.concurrency is False
    assert str(per_minute) in str(refusal)


async def test_rate_limiter_in_memory() -> None:
    limiter = RateLimiter(MemoryStorage())
    _check_refusal(await _exhaust(limiter, "key:alice", 3), 3)
    # Still refused on the next try, while other scopes are untouched.
    with pytest.raises(RateLimited):
        await limiter.hit("key:alice", 3)
    await limiter.hit("key:bob", 3)
    await limiter.hit("ip:openai:10.0.0.1", 3)
    # 0 (or less) means no limit.
    for _ in range(200):
        await limiter.hit("key:unlimited", 0)


async def test_rate_limiter_in_memory_by_default() -> None:
    limiter = RateLimiter(limit_storage(None, redis_prefix()))
    assert isinstance(limiter.storage, MemoryStorage)
    _check_refusal(await _exhaust(limiter, "key:alice", 2), 2)


async def test_rate_limiter_over_redis(prefix: str) -> None:
    limiter = RateLimiter(limit_storage(REDIS_URL, prefix))
    _check_refusal(await _exhaust(limiter, "key:alice", 5), 5)
    await limiter.hit("key:bob", 5)
    for _ in range(50):
        await limiter.hit("key:carol", 0)
    # The counters live in Redis under the configured prefix.
    assert _redis_keys(prefix)


async def test_two_workers_share_one_limit_through_redis(prefix: str) -> None:
    worker_a = RateLimiter(limit_storage(REDIS_URL, prefix))
    worker_b = RateLimiter(limit_storage(REDIS_URL, prefix))
    for _ in range(2):
        await worker_a.hit("key:alice", 4)
        await worker_b.hit("key:alice", 4)
    for worker in (worker_a, worker_b):
        with pytest.raises(RateLimited) as caught:
            await worker.hit("key:alice", 4)
        _check_refusal(caught.value, 4)

    # A worker on another prefix (another deployment sharing the Redis) counts separately.
    elsewhere = redis_prefix()
    try:
        await RateLimiter(limit_storage(REDIS_URL, elsewhere)).hit("key:alice", 4)
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{elsewhere}*"))
        if keys:
            client.delete(*keys)
        client.close()


# --- Session gates ----------------------------------------------------------------------------------


async def _check_gate(gate: SessionGate, other: SessionGate) -> None:
    """`gate` and `other` count the same sessions (the same gate, or two workers sharing one)."""
    first = await gate.acquire("alice", 2)
    second = await other.acquire("alice", 2)
    assert first.lease_id != second.lease_id
    assert await gate.active("alice") == 2 and await other.active("alice") == 2
    for g in (gate, other):
        with pytest.raises(RateLimited) as caught:
            await g.acquire("alice", 2)
        assert caught.value.concurrency is True
        assert caught.value.retry_after_s == 1
    # Another key has its own slots.
    bob = await other.acquire("bob", 1)
    with pytest.raises(RateLimited):
        await gate.acquire("bob", 1)

    await other.release(first)  # released by whichever worker: the slot is shared
    assert await gate.active("alice") == 1
    third = await gate.acquire("alice", 2)
    with pytest.raises(RateLimited):
        await other.acquire("alice", 2)

    # Releasing the same lease twice frees one slot, not someone else's.
    await gate.release(second)
    await gate.release(second)
    assert await other.active("alice") == 1
    await gate.release(third)
    await gate.release(bob)
    assert await gate.active("alice") == 0 and await other.active("bob") == 0
    # A larger limit lets more in at once.
    leases = [await gate.acquire("alice", 3) for _ in range(3)]
    with pytest.raises(RateLimited):
        await other.acquire("alice", 3)
    for lease in leases:
        await other.release(lease)
    assert await gate.active("alice") == 0


async def test_memory_session_gate() -> None:
    gate = MemorySessionGate()
    await _check_gate(gate, gate)
    # Two in-process gates are two separate counts.
    a, b = MemorySessionGate(), MemorySessionGate()
    await a.acquire("alice", 1)
    await b.acquire("alice", 1)


async def test_redis_session_gates_share_slots(prefix: str, clients: list[aioredis.Redis]) -> None:
    gate_a = RedisSessionGate(clients[0], prefix)
    gate_b = RedisSessionGate(clients[1], prefix)
    await _check_gate(gate_a, gate_b)

    # Held sessions are visible to every worker; a gate on another prefix counts separately.
    lease = await gate_a.acquire("alice", 1)
    isolated = RedisSessionGate(clients[1], redis_prefix())
    other_lease = await isolated.acquire("alice", 1)
    await isolated.release(other_lease)
    await gate_b.release(lease)
    assert await gate_a.active("alice") == 0


async def test_redis_session_gate_concurrent_acquires(prefix: str, clients: list[aioredis.Redis]) -> None:
    gates = [RedisSessionGate(client, prefix) for client in clients]

    async def try_acquire(index: int) -> bool:
        try:
            await gates[index % 2].acquire("alice", 3)
        except RateLimited:
            return False
        return True

    granted = await asyncio.gather(*(try_acquire(i) for i in range(20)))
    assert sum(granted) == 3
    assert await gates[0].active("alice") == 3


# --- Revocation fan-out -----------------------------------------------------------------------------


async def test_revocation_feed_through_redis(prefix: str, clients: list[aioredis.Redis]) -> None:
    publisher = RevocationFeed(clients[0], prefix)
    listener = RevocationFeed(clients[1], prefix)
    stranger = RevocationFeed(clients[1], redis_prefix())
    heard: dict[str, list[str]] = {"publisher": [], "listener": [], "stranger": [], "gone": []}
    events = {name: asyncio.Event() for name in heard}

    def recorder(name: str) -> Callable[[str], None]:
        def listen(key_id: str) -> None:
            heard[name].append(key_id)
            events[name].set()

        return listen

    publisher.subscribe(recorder("publisher"))
    listener.subscribe(recorder("listener"))
    stranger.subscribe(recorder("stranger"))
    unsubscribe = listener.subscribe(recorder("gone"))
    unsubscribe()
    for feed in (publisher, listener, stranger):
        await feed.start()
    try:
        await publisher.publish("abc123def456")
        await asyncio.wait_for(events["listener"].wait(), timeout=1.0)
        # The publishing worker hears its own revocation too (its key cache must drop the key).
        await asyncio.wait_for(events["publisher"].wait(), timeout=1.0)
        assert heard["listener"] == ["abc123def456"]
        assert heard["publisher"] == ["abc123def456"]

        await listener.publish("000000000002")
        for name in ("listener", "publisher"):
            for _ in range(20):
                if len(heard[name]) == 2:
                    break
                await asyncio.sleep(0.05)
            assert heard[name] == ["abc123def456", "000000000002"], name
        assert heard["stranger"] == []
        assert heard["gone"] == []
    finally:
        for feed in (publisher, listener, stranger):
            await feed.stop()


async def test_revocation_feed_without_redis() -> None:
    feed = RevocationFeed(None, redis_prefix())
    await feed.start()
    heard: list[str] = []
    also: list[str] = []
    feed.subscribe(heard.append)
    unsubscribe = feed.subscribe(also.append)
    await feed.publish("abc123def456")
    assert heard == ["abc123def456"] and also == ["abc123def456"]
    unsubscribe()
    await feed.publish("000000000002")
    assert heard == ["abc123def456", "000000000002"]
    assert also == ["abc123def456"]
    await feed.stop()
