"""Keys, metering, usage totals and dials against a real store: a SQLite file and a PostgreSQL database."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select

from earshot.accounts.errors import InsufficientCredits, InvalidKey, KeyExpired, KeyRevoked, ModelNotAllowed
from earshot.accounts.keys import CACHE_TTL_S, KeyChanges, KeyRing, check_model, hash_secret, new_key
from earshot.accounts.metering import RESERVE_STEP_MS, Meter, Price
from earshot.accounts.revocation import RevocationFeed
from earshot.dials import DialBoard, DialError, Dials
from earshot.settings import Settings
from earshot.store.db import Database
from earshot.store.records import KeyRecord, Outcome, UsageRecord, UsageTotal
from earshot.store.repositories import DialRepository, KeyRepository, UsageRepository
from earshot.store.tables import metadata
from tests.conftest import REDIS_URL, redis_prefix

PLAINTEXT = re.compile(r"^es_[0-9a-f]{12}_[A-Za-z0-9]{40}$")
ROUTE = "openai.transcriptions"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated, empty earshot database on each backend."""
    database = Database(database_url)
    await database.upgrade()
    yield database
    await database.dispose()


async def _key(keys: KeyRepository, key_id: str) -> KeyRecord:
    record = await keys.get(key_id)
    assert record is not None
    return record


async def _balance_ms(keys: KeyRepository, key_id: str) -> int | None:
    return (await _key(keys, key_id)).credits_ms


async def _usage(db: Database, key_id: str | None = None) -> list[UsageRecord]:
    return await UsageRepository(db).records(key_id=key_id)


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
    assert len(metadata.sorted_tables) == 3
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


# --- Metering ---------------------------------------------------------------------------------------


async def test_meter_ok_closes_exactly_once(db: Database) -> None:
    keys = KeyRepository(db)
    ring = KeyRing(keys)
    key, plaintext = await ring.create("alice", credits_seconds=100)
    record = await ring.authenticate(plaintext)
    meter = Meter(UsageRepository(db))

    ticket = meter.open(record, ROUTE)
    ticket.model = "whisper-1"
    ticket.price = Price(0.001, "second")
    assert await _usage(db, key.id) == []  # nothing is written before credit moves
    ticket.audio_ms = 3_000
    await meter.reserve(ticket, 3_000)
    assert ticket.balance_ms == 97_000
    assert await _balance_ms(keys, key.id) == 97_000
    [running] = await _usage(db, key.id)
    assert running.outcome is None and running.ended_at is None and running.debited_ms == 3_000

    first = meter.close(ticket, "ok")
    assert meter.close(ticket, "error") is first  # a second close is the same write
    closed = await first
    assert closed.outcome == "ok"
    again = meter.close(ticket, "ok")
    assert again is first
    assert await again == closed
    await meter.drain()

    [row] = await _usage(db, key.id)
    assert row.id == ticket.id
    assert row.outcome == "ok"
    assert row.model == "whisper-1" and row.route == ROUTE and row.key_id == key.id
    assert row.audio_ms == 3_000 and row.debited_ms == 3_000
    assert row.quantity == pytest.approx(3.0)
    assert row.unit == "second"
    assert row.cost == pytest.approx(0.003)
    assert row.ended_at is not None and row.ended_at >= row.started_at
    assert await _balance_ms(keys, key.id) == 97_000


async def test_meter_unopened_ticket_inserts_one_row(db: Database) -> None:
    keys = KeyRepository(db)
    ring = KeyRing(keys)
    key, plaintext = await ring.create("poor", credits_seconds=1)
    record = await ring.authenticate(plaintext)
    meter = Meter(UsageRepository(db))

    ticket = meter.open(record, ROUTE)
    ticket.audio_ms = 5_000
    with pytest.raises(InsufficientCredits):
        await meter.reserve(ticket, 5_000)
    assert await _usage(db, key.id) == []
    rejected = meter.close(ticket, "rejected")
    await rejected
    assert await meter.close(ticket, "rejected") == await rejected
    [row] = await _usage(db, key.id)
    assert row.outcome == "rejected"
    assert (row.debited_ms, row.quantity, row.cost) == (0, 0.0, 0.0)
    assert row.ended_at is not None
    assert await _balance_ms(keys, key.id) == 1_000

    # Anonymous and unlimited callers: no credit moves, one record each, charged by the audio.
    anonymous = meter.open(None, ROUTE)
    anonymous.price = Price(0.5, "second")
    anonymous.audio_ms = 2_000
    await meter.reserve(anonymous, 2_000)
    await meter.close(anonymous, "ok")
    await meter.close(anonymous, "ok")
    [anon_row] = await UsageRepository(db).records(anonymous=True)
    assert anon_row.key_id is None and anon_row.outcome == "ok"
    assert anon_row.quantity == pytest.approx(2.0) and anon_row.cost == pytest.approx(1.0)

    unlimited_key, unlimited_plain = await ring.create("rich")
    unlimited = meter.open(await ring.authenticate(unlimited_plain), ROUTE)
    unlimited.audio_ms = 4_000
    await meter.reserve(unlimited, 4_000)
    await meter.close(unlimited, "ok")
    [unlimited_row] = await _usage(db, unlimited_key.id)
    assert unlimited_row.audio_ms == 4_000 and unlimited_row.quantity == pytest.approx(4.0)
    assert await _balance_ms(keys, unlimited_key.id) is None


async def test_meter_error_refunds_everything(db: Database) -> None:
    keys = KeyRepository(db)
    ring = KeyRing(keys)
    key, plaintext = await ring.create("alice", credits_seconds=10)
    meter = Meter(UsageRepository(db))
    ticket = meter.open(await ring.authenticate(plaintext), ROUTE)
    ticket.price = Price(1.0, "second")
    ticket.audio_ms = 4_000
    await meter.reserve(ticket, 4_000)
    assert await _balance_ms(keys, key.id) == 6_000

    record = await meter.close(ticket, "error")
    assert record.outcome == "error"
    assert await _balance_ms(keys, key.id) == 10_000
    [row] = await _usage(db, key.id)
    assert row.outcome == "error"
    assert (row.debited_ms, row.quantity, row.cost) == (0, 0.0, 0.0)
    assert row.audio_ms == 4_000
    # Closing again never refunds twice.
    await meter.close(ticket, "error")
    assert await _balance_ms(keys, key.id) == 10_000


async def test_meter_client_closed_live_audio_pays_what_was_consumed(db: Database) -> None:
    keys = KeyRepository(db)
    ring = KeyRing(keys)
    key, plaintext = await ring.create("alice", credits_seconds=60)
    meter = Meter(UsageRepository(db))
    ticket = meter.open(await ring.authenticate(plaintext), "deepgram.listen")
    ticket.price = Price(0.01, "second")

    await meter.consume(ticket, 1_200)
    assert ticket.debited_ms == RESERVE_STEP_MS  # reserved ahead, one step
    assert await _balance_ms(keys, key.id) == 60_000 - RESERVE_STEP_MS
    await meter.consume(ticket, 800)
    assert ticket.debited_ms == RESERVE_STEP_MS  # still inside the first step
    [running] = await _usage(db, key.id)
    assert running.outcome is None

    record = await meter.close(ticket, "client_closed")
    assert record.outcome == "client_closed"
    assert await _balance_ms(keys, key.id) == 58_000
    [row] = await _usage(db, key.id)
    assert row.outcome == "client_closed"
    assert row.audio_ms == 2_000 and row.debited_ms == 2_000
    assert row.quantity == pytest.approx(2.0) and row.cost == pytest.approx(0.02)


async def test_meter_live_audio_runs_dry_without_going_negative(db: Database) -> None:
    keys = KeyRepository(db)
    ring = KeyRing(keys)
    key, plaintext = await ring.create("alice", credits_seconds=3)
    meter = Meter(UsageRepository(db))
    ticket = meter.open(await ring.authenticate(plaintext), "deepgram.listen")

    await meter.consume(ticket, 1_000)  # a full step doesn't fit; the shortfall does
    await meter.consume(ticket, 1_000)
    assert ticket.debited_ms == 2_000
    with pytest.raises(InsufficientCredits):
        await meter.consume(ticket, 1_500)
    assert await _balance_ms(keys, key.id) == 1_000
    record = await meter.close(ticket, "ok")
    assert record.debited_ms == 2_000  # charged what it could reserve
    [row] = await _usage(db, key.id)
    assert row.audio_ms == 3_500 and row.debited_ms == 2_000
    assert await _balance_ms(keys, key.id) == 1_000


async def test_meter_key_made_unlimited_mid_session_keeps_running(db: Database) -> None:
    keys = KeyRepository(db)
    ring = KeyRing(keys)
    key, plaintext = await ring.create("alice", credits_seconds=60)
    meter = Meter(UsageRepository(db))
    ticket = meter.open(await ring.authenticate(plaintext), "deepgram.listen")
    await meter.consume(ticket, 1_000)
    await ring.update(key.id, KeyChanges(credits_seconds=None))  # the admin lifts the limit
    await meter.consume(ticket, 6_000)  # needs a second reservation
    record = await meter.close(ticket, "ok")
    assert record.audio_ms == 7_000


async def test_meter_concurrent_reservations_never_overdraw(db: Database) -> None:
    keys = KeyRepository(db)
    ring = KeyRing(keys)
    key, plaintext = await ring.create("busy", credits_seconds=20 * 1.5)
    record = await ring.authenticate(plaintext)
    meter = Meter(UsageRepository(db))
    balances: list[int] = []

    async def request() -> UsageRecord:
        ticket = meter.open(record, ROUTE)
        ticket.audio_ms = 1_500
        try:
            await meter.reserve(ticket, 1_500)
        except InsufficientCredits:
            return await meter.close(ticket, "rejected")
        assert ticket.balance_ms is not None
        balances.append(ticket.balance_ms)
        await asyncio.sleep(0)
        return await meter.close(ticket, "ok")

    results = await asyncio.gather(*(request() for _ in range(50)))
    assert sorted(r.outcome or "" for r in results) == ["ok"] * 20 + ["rejected"] * 30
    assert len(balances) == 20 and min(balances) >= 0
    assert sorted(balances) == [1_500 * i for i in range(20)]

    rows = await _usage(db, key.id)
    assert len(rows) == 50
    assert sum(r.outcome == "ok" for r in rows) == 20
    assert sum(r.outcome == "rejected" for r in rows) == 30
    assert sum(r.debited_ms for r in rows) == 30_000
    assert await _balance_ms(keys, key.id) == 0


def test_price_units() -> None:
    per_second = Price(0.0001, "second")
    assert per_second.quantity(61_500) == pytest.approx(61.5)
    assert per_second.quantity(0) == 0
    per_minute = Price(0.006, "minute")
    assert per_minute.quantity(61_000) == 2
    assert per_minute.quantity(60_000) == 1
    assert per_minute.quantity(1) == 1
    assert per_minute.quantity(0) == 0


async def test_price_is_recorded_per_request(db: Database) -> None:
    meter = Meter(UsageRepository(db))

    async def one(price: Price, audio_ms: int) -> UsageRecord:
        ticket = meter.open(None, ROUTE)
        ticket.model = "m"
        ticket.price = price
        ticket.audio_ms = audio_ms
        return await meter.close(ticket, "ok")

    by_second = await one(Price(0.0001, "second"), 61_000)
    assert by_second.quantity == pytest.approx(61.0) and by_second.cost == pytest.approx(0.0061)
    by_minute = await one(Price(0.006, "minute"), 61_000)
    assert by_minute.quantity == 2 and by_minute.cost == pytest.approx(0.012)
    # Two 30 s requests are two minutes: minutes round up per request, not per total.
    await one(Price(0.006, "minute"), 30_000)
    await one(Price(0.006, "minute"), 30_000)
    rows = await UsageRepository(db).records(anonymous=True)
    minute_rows = [r for r in rows if r.unit == "minute"]
    assert [r.quantity for r in minute_rows] == [2.0, 1.0, 1.0]
    assert sum(r.cost for r in minute_rows) == pytest.approx(0.024)
    [second_row] = [r for r in rows if r.unit == "second"]
    assert second_row.cost == pytest.approx(0.0061)


async def test_credits_low(db: Database) -> None:
    ring = KeyRing(KeyRepository(db))
    _, plaintext = await ring.create("alice", credits_seconds=20)
    _, unlimited_plain = await ring.create("rich")
    meter = Meter(UsageRepository(db), credits_low_ms=10_000)
    ticket = meter.open(await ring.authenticate(plaintext), "deepgram.listen")
    assert meter.credits_low(ticket) is False  # nothing known yet

    await meter.consume(ticket, 1_000)  # reserves 5 s: 15 s left, 4 s of it unused -> 19 s
    assert meter.credits_low(ticket) is False
    await meter.consume(ticket, 4_000)
    assert meter.credits_low(ticket) is False  # 15 s
    await meter.consume(ticket, 5_000)
    assert ticket.balance_ms == 10_000
    assert meter.credits_low(ticket) is False  # exactly at the threshold
    await meter.consume(ticket, 1)  # 5 s left + 4.999 s unused reservation
    assert ticket.balance_ms == 5_000
    assert meter.credits_low(ticket) is True
    await meter.close(ticket, "ok")

    rich = meter.open(await ring.authenticate(unlimited_plain), "deepgram.listen")
    await meter.consume(rich, 3_600_000)
    assert meter.credits_low(rich) is False


# --- Usage totals -----------------------------------------------------------------------------------


def _finished(
    key_id: str | None,
    model: str,
    started_at: datetime,
    audio_ms: int,
    cost: float,
    outcome: Outcome = "ok",
) -> UsageRecord:
    return UsageRecord(
        id=new_key()[0] + new_key()[0],
        key_id=key_id,
        model=model,
        route=ROUTE,
        audio_ms=audio_ms,
        debited_ms=0,
        quantity=audio_ms / 1000,
        unit="second",
        cost=cost,
        outcome=outcome,
        started_at=started_at,
        ended_at=started_at + timedelta(seconds=1),
    )


async def test_usage_totals(db: Database) -> None:
    ring = KeyRing(KeyRepository(db))
    k1, _ = await ring.create("one", credits_seconds=100)
    k2, _ = await ring.create("two")
    usage = UsageRepository(db)

    def at(day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
        return datetime(2024, 3, day, hour, minute, second, micro, tzinfo=UTC)

    plus_two = timezone(timedelta(hours=2))
    records = [
        _finished(k1.id, "a", at(1, 10), 1_000, 0.5),
        # 01:30 at UTC+2 is 23:30 UTC on the 1st.
        _finished(k1.id, "b", datetime(2024, 3, 2, 1, 30, tzinfo=plus_two), 2_000, 1.0),
        _finished(k2.id, "a", at(2), 3_000, 1.5, "client_closed"),
        _finished(k2.id, "a", at(2, 12), 0, 0.0, "rejected"),
        _finished(None, "a", at(2, 1), 500, 0.0),
        # Outside [start, end): just before the start, exactly at the end.
        _finished(k1.id, "a", at(1) - timedelta(microseconds=1), 9_000, 9.0),
        _finished(k1.id, "a", at(3), 9_000, 9.0),
    ]
    for record in records:
        assert await usage.insert_finished(record) is True
    assert await usage.insert_finished(records[0]) is False  # idempotent on its id
    # Still running: no outcome yet, so not in any total.
    running = UsageRecord(
        id=new_key()[0],
        key_id=k1.id,
        model="a",
        route=ROUTE,
        audio_ms=7_000,
        debited_ms=7_000,
        quantity=0.0,
        unit="second",
        cost=0.0,
        outcome=None,
        started_at=at(1, 12),
        ended_at=None,
    )
    debit = await usage.open_with_debit(running, 7_000)
    assert debit is not None and debit.balance_ms == 93_000

    start, end = at(1), at(3)

    def table(totals: list[UsageTotal]) -> dict[str | None, tuple[int, int, float, float]]:
        return {t.group: (t.requests, t.audio_ms, round(t.quantity, 6), round(t.cost, 6)) for t in totals}

    by_model = await usage.totals(group_by="model", start=start, end=end)
    assert table(by_model) == {"a": (4, 4_500, 4.5, 2.0), "b": (1, 2_000, 2.0, 1.0)}
    assert [t.group for t in by_model] == ["a", "b"]

    by_day = await usage.totals(group_by="day", start=start, end=end)
    assert table(by_day) == {"2024-03-01": (2, 3_000, 3.0, 1.5), "2024-03-02": (3, 3_500, 3.5, 1.5)}
    assert [t.group for t in by_day] == ["2024-03-01", "2024-03-02"]

    by_key = await usage.totals(group_by="key", start=start, end=end)
    assert table(by_key) == {
        k1.id: (2, 3_000, 3.0, 1.5),
        k2.id: (2, 3_000, 3.0, 1.5),
        None: (1, 500, 0.5, 0.0),
    }

    assert table(await usage.totals(group_by="model", key_id=k1.id, start=start, end=end)) == {
        "a": (1, 1_000, 1.0, 0.5),
        "b": (1, 2_000, 2.0, 1.0),
    }
    assert table(await usage.totals(group_by="model", anonymous=True, start=start, end=end)) == {
        "a": (1, 500, 0.5, 0.0)
    }
    # A window given in another zone means the same instants.
    shifted = await usage.totals(
        group_by="model", start=start.astimezone(plus_two), end=end.astimezone(plus_two)
    )
    assert table(shifted) == table(by_model)
    assert await usage.totals(group_by="model", start=at(5), end=at(6)) == []


# --- Dials ------------------------------------------------------------------------------------------


async def test_dials(db: Database, database_url: str) -> None:
    defaults = Dials.from_settings(Settings())
    assert defaults.max_upload_bytes == 25 * 1024 * 1024
    assert (defaults.default_rpm, defaults.default_max_sessions, defaults.ip_rpm) == (0, 0, 0)
    assert defaults.keepalive_s == 10.0 and defaults.credits_low_seconds == 60.0

    board = DialBoard(DialRepository(db), defaults)
    assert await board.refresh() == defaults

    updated = await board.set({"default_rpm": 30, "keepalive_s": 2.5})
    assert (updated.default_rpm, updated.keepalive_s) == (30, 2.5)
    assert board.current == updated
    assert updated.ip_rpm == defaults.ip_rpm

    for bad in (
        {"no_such_dial": 1},
        {"default_rpm": -1},
        {"ip_rpm": -5},
        {"keepalive_s": 0},
        {"max_upload_bytes": 0},
        {"credits_low_seconds": -0.5},
        {"default_rpm": 5, "default_max_sessions": -1},  # one bad value rejects the whole change
    ):
        with pytest.raises(DialError):
            await board.set(bad)
        assert board.current == updated, bad
    assert await DialRepository(db).all() == {"default_rpm": 30, "keepalive_s": 2.5}

    # Another worker (its own connection pool) on the same database.
    other_db = Database(database_url)
    try:
        other = DialBoard(DialRepository(other_db), defaults)
        assert other.current == defaults
        assert await other.refresh() == updated
        await other.set({"ip_rpm": 12})
        assert board.current.ip_rpm == 0
        assert (await board.refresh()).ip_rpm == 12

        # A running board follows changes by itself within a second.
        await board.start()
        try:
            await other.set({"default_max_sessions": 3})
            for _ in range(40):
                if board.current.default_max_sessions == 3:
                    break
                await asyncio.sleep(0.05)
            assert board.current.default_max_sessions == 3
        finally:
            await board.stop()
    finally:
        await other_db.dispose()
