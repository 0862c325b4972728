"""The Redis turn lock: one holder per session, freed by its holder only, renewed while held, and expiring
when its holder vanished (a crashed worker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from earshot.voice.turn_lock import MemoryTurnLocks, RedisTurnLocks, SessionBusy
from tests.conftest import REDIS_URL, redis_prefix


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


async def test_a_held_session_is_busy_for_every_worker_until_released(redis: Redis) -> None:
    prefix = redis_prefix()
    first, second = RedisTurnLocks(redis, prefix), RedisTurnLocks(redis, prefix)
    async with first.hold("sess_1"):
        with pytest.raises(SessionBusy):
            async with second.hold("sess_1"):
                pass
        async with second.hold("sess_2"):
            pass
    async with second.hold("sess_1"):
        pass


async def test_a_running_turn_keeps_its_hold_past_the_ttl(redis: Redis) -> None:
    locks = RedisTurnLocks(redis, redis_prefix(), ttl_ms=300)
    async with locks.hold("sess_long"):
        await asyncio.sleep(1.0)
        with pytest.raises(SessionBusy):
            async with locks.hold("sess_long"):
                pass


async def test_a_crashed_workers_hold_expires_and_is_never_freed_by_another(redis: Redis) -> None:
    prefix = redis_prefix()
    locks = RedisTurnLocks(redis, prefix, ttl_ms=300)
    # A worker that died mid-turn left its token behind, with nobody renewing it.
    await redis.set(f"{prefix}:turn:sess_dead", "token-of-a-dead-worker", px=300)
    with pytest.raises(SessionBusy):
        async with locks.hold("sess_dead"):
            pass
    deadline = time.monotonic() + 5
    while await redis.exists(f"{prefix}:turn:sess_dead"):
        assert time.monotonic() < deadline, "the dead worker's hold never expired"
        await asyncio.sleep(0.05)
    async with locks.hold("sess_dead"):
        # Another holder's token is left alone by compare-and-delete.
        await redis.set(f"{prefix}:turn:sess_dead", "someone-else", px=5000)
    assert await redis.get(f"{prefix}:turn:sess_dead") == b"someone-else"


async def test_in_process_locks_refuse_a_second_turn_of_the_same_session() -> None:
    locks = MemoryTurnLocks()
    async with locks.hold("sess_a"):
        with pytest.raises(SessionBusy):
            async with locks.hold("sess_a"):
                pass
    async with locks.hold("sess_a"):
        pass
