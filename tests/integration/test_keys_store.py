"""API keys against a real store (SQLite and PostgreSQL): lifecycle, hashing, revocation, models."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select

from earshot.accounts.errors import InvalidKey, KeyExpired, KeyRevoked, ModelNotAllowed
from earshot.accounts.keys import CACHE_TTL_S, KeyChanges, KeyRing, check_model, hash_secret, new_key
from earshot.accounts.metering import Meter
from earshot.accounts.revocation import RevocationFeed
from earshot.dials import DialBoard, Dials
from earshot.settings import Settings
from earshot.store.db import Database
from earshot.store.repositories import DialRepository, KeyRepository, UsageRepository
from earshot.store.tables import metadata
from tests.conftest import REDIS_URL, redis_prefix

PLAINTEXT = re.compile(r"^es_[0-9a-f]{12}_[A-Za-z0-9]{40}$")
ROUTE = "openai.transcriptions"


# --- API keys ---------------------------------------------------------------------------------------


async def test_key_lifecycle(db: Database) -> None:
    ring = KeyRing(KeyRepository(db))
    assert await ring.any_keys() is False
    assert await ring.list() == []

    expires = datetime.now(UTC) + timedelta(days=30)
    key, plaintext = await ring.create(
        "alice", models=("whisper-1",), credits_seconds=12.5, rpm=5, max_sessions=2, expires_at=expires
    )
    assert PLAINTEXT.match(plaintext)
    assert plaintext.startswith(f"es_{key.id}_")
    assert (key.name, key.models, key.credits_seconds, key.rpm, key.max_sessions) == (
        "alice",
        ("whisper-1",),
        12.5,
        5,
        2,
    )
    assert key.expires_at == expires
    assert key.state == "active" and key.revoked_at is None
    assert await ring.any_keys() is True

    record = await ring.authenticate(plaintext)
    assert record.id == key.id
    assert record.credits_ms == 12_500
    # Surrounding whitespace (a pasted key) still authenticates.
    assert (await ring.authenticate(f"  {plaintext}\n")).id == key.id

    other, _ = await ring.create("bob")
    assert [k.id for k in await ring.list()] == [key.id, other.id]
    assert await ring.get(key.id) == key
    assert await ring.get(other.id) == other
    assert (other.models, other.credits_seconds, other.rpm, other.max_sessions, other.expires_at) == (
        None,
        None,
        None,
        None,
        None,
    )
    assert await ring.get(new_key()[0]) is None

    # Only the name changes; every UNSET field is left alone.
    renamed = await ring.update(key.id, KeyChanges(name="alice-2"))
    assert renamed is not None
    assert renamed.name == "alice-2"
    assert (renamed.models, renamed.credits_seconds, renamed.rpm, renamed.max_sessions) == (
        ("whisper-1",),
        12.5,
        5,
        2,
    )
    assert renamed.expires_at == expires

    later = expires + timedelta(days=1)
    changed = await ring.update(
        key.id,
        KeyChanges(
            models=("whisper-1", "nova-2"), credits_seconds=3.25, rpm=60, max_sessions=4, expires_at=later
        ),
    )
    assert changed is not None
    assert changed.name == "alice-2"
    assert (changed.models, changed.credits_seconds, changed.rpm, changed.max_sessions) == (
        ("whisper-1", "nova-2"),
        3.25,
        60,
        4,
    )
    assert changed.expires_at == later
    assert await ring.get(key.id) == changed
    assert (await ring.authenticate(plaintext)).credits_ms == 3_250

    cleared = await ring.update(
        key.id, KeyChanges(models=None, credits_seconds=None, rpm=None, max_sessions=None, expires_at=None)
    )
    assert cleared is not None
    assert (cleared.models, cleared.credits_seconds, cleared.rpm, cleared.max_sessions) == (
        None,
        None,
        None,
        None,
    )
    assert cleared.expires_at is None and cleared.name == "alice-2"
    assert await ring.get(key.id) == cleared
    assert await ring.update(new_key()[0], KeyChanges(name="ghost")) is None

    revoked = await ring.revoke(key.id)
    assert revoked is not None
    assert revoked.state == "revoked" and revoked.revoked_at is not None
    with pytest.raises(KeyRevoked):
        await ring.authenticate(plaintext)
    assert await ring.revoke(new_key()[0]) is None
    # The other key is untouched, and revoked keys still count as "keys exist".
    assert (await ring.get(other.id)) == other
    assert await ring.any_keys() is True
    assert [k.state for k in await ring.list()] == ["revoked", "active"]


async def test_expired_key(db: Database) -> None:
    ring = KeyRing(KeyRepository(db))
    _, past = await ring.create("old", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(KeyExpired):
        await ring.authenticate(past)

    key, plaintext = await ring.create("soon", expires_at=datetime.now(UTC) + timedelta(hours=1))
    await ring.authenticate(plaintext)
    await ring.update(key.id, KeyChanges(expires_at=datetime.now(UTC) - timedelta(minutes=1)))
    with pytest.raises(KeyExpired):
        await ring.authenticate(plaintext)
    assert await ring.is_active(key.id) is False
    # Clearing the expiry brings it back.
    await ring.update(key.id, KeyChanges(expires_at=None))
    assert (await ring.authenticate(plaintext)).id == key.id


async def test_invalid_keys(db: Database) -> None:
    ring = KeyRing(KeyRepository(db))
    key, plaintext = await ring.create("alice")
    secret = plaintext.rsplit("_", 1)[1]
    wrong_secret = f"es_{key.id}_{('A' if secret[0] != 'A' else 'B') + secret[1:]}"
    unknown_id = f"es_{new_key()[0]}_{secret}"
    malformed = [
        "",
        "   ",
        "es_",
        plaintext[:-1],
        plaintext + "x",
        plaintext.upper(),
        f"sk_{key.id}_{secret}",
        f"Bearer {plaintext}",
        plaintext.replace("_", "-"),
    ]
    for token in [wrong_secret, unknown_id, *malformed]:
        with pytest.raises(InvalidKey) as caught:
            await ring.authenticate(token)
        assert type(caught.value) is InvalidKey, token
    assert (await ring.authenticate(plaintext)).id == key.id


async def test_is_active_follows_revocation_in_another_worker(db: Database) -> None:
    uncached = KeyRing(KeyRepository(db), cache_ttl_s=0)
    cached = KeyRing(KeyRepository(db))
    admin = KeyRing(KeyRepository(db))
    key, plaintext = await admin.create("alice")
    assert await uncached.is_active(key.id) is True
    assert await cached.is_active(key.id) is True
    assert await uncached.is_active(new_key()[0]) is False

    await admin.revoke(key.id)
    assert await uncached.is_active(key.id) is False
    with pytest.raises(KeyRevoked):
        await uncached.authenticate(plaintext)
    # A worker with the default cache notices within CACHE_TTL_S.
    await asyncio.sleep(CACHE_TTL_S + 0.1)
    assert await cached.is_active(key.id) is False
    with pytest.raises(KeyRevoked):
        await cached.authenticate(plaintext)


async def test_any_keys_seen_by_another_worker(db: Database) -> None:
    worker = KeyRing(KeyRepository(db), cache_ttl_s=0)
    assert await worker.any_keys() is False
    await KeyRing(KeyRepository(db)).create("first")
    assert await worker.any_keys() is True


async def test_revocation_through_redis_reaches_another_workers_cache(db: Database) -> None:
    """A worker with a long-lived cache drops a key revoked elsewhere as soon as the revocation lands."""
    prefix = redis_prefix()
    redis_a = aioredis.Redis.from_url(REDIS_URL)
    redis_b = aioredis.Redis.from_url(REDIS_URL)
    worker = KeyRing(KeyRepository(db), cache_ttl_s=3600)
    admin = KeyRing(KeyRepository(db))
    feed_worker = RevocationFeed(redis_a, prefix)
    feed_admin = RevocationFeed(redis_b, prefix)
    heard = asyncio.Event()
    feed_worker.subscribe(worker.forget)
    feed_worker.subscribe(lambda _key_id: heard.set())
    await feed_worker.start()
    await feed_admin.start()
    try:
        key, plaintext = await admin.create("alice")
        await worker.authenticate(plaintext)  # now cached for an hour
        await admin.revoke(key.id)
        await feed_admin.publish(key.id)
        await asyncio.wait_for(heard.wait(), timeout=1.0)
        with pytest.raises(KeyRevoked):
            await worker.authenticate(plaintext)
    finally:
        await feed_worker.stop()
        await feed_admin.stop()
        await redis_a.aclose()
        await redis_b.aclose()


async def test_only_the_hash_of_a_secret_is_stored(db: Database) -> None:
    ring = KeyRing(KeyRepository(db))
    created = [await ring.create(name) for name in ("alice", "bob")]
    # Usage rows and dials too: nothing anywhere may hold the plaintext.
    key_record = await ring.authenticate(created[0][1])
    meter = Meter(UsageRepository(db))
    await meter.close(meter.open(key_record, ROUTE), "ok")
    await DialBoard(DialRepository(db), Dials.from_settings(Settings())).set({"default_rpm": 7})

    dump: list[str] = []
    async with db.read() as conn:
        for table in metadata.sorted_tables:
            rows = (await conn.execute(select(table))).all()
            dump.extend(repr(tuple(row)) for row in rows)
            dump.extend(str(value) for row in rows for value in row)
    text = "\n".join(dump)
    # Every table was read, the three that hold keys, usage and dials among them.
    assert {"api_keys", "usage_records", "dials"} <= {table.name for table in metadata.sorted_tables}
    for key, plaintext in created:
        secret = plaintext.rsplit("_", 1)[1]
        assert plaintext not in text
        assert secret not in text
        assert hash_secret(secret) in text
        assert key.id in text


async def test_check_model(db: Database) -> None:
    ring = KeyRing(KeyRepository(db))
    _, limited = await ring.create("limited", models=("whisper-1", "faster-whisper-small"))
    _, open_ = await ring.create("open")
    record = await ring.authenticate(limited)
    assert record.models == ("whisper-1", "faster-whisper-small")

    check_model(record, "whisper-1", {"faster-whisper-large-v3", "whisper-1"})  # by the alias asked for
    check_model(record, "small", {"faster-whisper-small", "small"})  # by canonical id
    # A request naming the model another way (or not at all) is allowed if the key lists any of its names.
    check_model(record, "faster-whisper-large-v3", {"faster-whisper-large-v3", "whisper-1"})
    with pytest.raises(ModelNotAllowed) as caught:
        check_model(record, "nova-2", {"deepgram-nova-2", "nova-2"})
    assert caught.value.model_id == "nova-2"
    assert "nova-2" in str(caught.value)

    unrestricted = await ring.authenticate(open_)
    assert unrestricted.models is None
    check_model(unrestricted, "anything", {"anything-at-all"})
