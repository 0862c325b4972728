"""Metering against a real store (SQLite and PostgreSQL): exactly-once records and atomic credit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from earshot.accounts.errors import InsufficientCredits
from earshot.accounts.keys import ApiKey, KeyChanges, KeyRing
from earshot.accounts.metering import RESERVE_STEP_MS, Meter, Price, UsageTicket
from earshot.store.db import Database
from earshot.store.records import UsageRecord
from earshot.store.repositories import KeyRepository, UsageRepository
from tests.integration.conftest import balance_ms, usage_of

ROUTE = "openai.transcriptions"

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
    assert await usage_of(db, key.id) == []  # nothing is written before credit moves
    ticket.audio_ms = 3_000
    await meter.reserve(ticket, 3_000)
    assert ticket.balance_ms == 97_000
    assert await balance_ms(keys, key.id) == 97_000
    [running] = await usage_of(db, key.id)
    assert running.outcome is None and running.ended_at is None and running.debited_ms == 3_000

    first = meter.close(ticket, "ok")
    assert meter.close(ticket, "error") is first  # a second close is the same write
    closed = await first
    assert closed.outcome == "ok"
    again = meter.close(ticket, "ok")
    assert again is first
    assert await again == closed
    await meter.drain()

    [row] = await usage_of(db, key.id)
    assert row.id == ticket.id
    assert row.outcome == "ok"
    assert row.model == "whisper-1" and row.route == ROUTE and row.key_id == key.id
    assert row.audio_ms == 3_000 and row.debited_ms == 3_000
    assert row.quantity == pytest.approx(3.0)
    assert row.unit == "second"
    assert row.cost == pytest.approx(0.003)
    assert row.ended_at is not None and row.ended_at >= row.started_at
    assert await balance_ms(keys, key.id) == 97_000


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
    assert await usage_of(db, key.id) == []
    rejected = meter.close(ticket, "rejected")
    await rejected
    assert await meter.close(ticket, "rejected") == await rejected
    [row] = await usage_of(db, key.id)
    assert row.outcome == "rejected"
    assert (row.debited_ms, row.quantity, row.cost) == (0, 0.0, 0.0)
    assert row.ended_at is not None
    assert await balance_ms(keys, key.id) == 1_000

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
    [unlimited_row] = await usage_of(db, unlimited_key.id)
    assert unlimited_row.audio_ms == 4_000 and unlimited_row.quantity == pytest.approx(4.0)
    assert await balance_ms(keys, unlimited_key.id) is None


async def test_meter_error_refunds_everything(db: Database) -> None:
    keys = KeyRepository(db)
    ring = KeyRing(keys)
    key, plaintext = await ring.create("alice", credits_seconds=10)
    meter = Meter(UsageRepository(db))
    ticket = meter.open(await ring.authenticate(plaintext), ROUTE)
    ticket.price = Price(1.0, "second")
    ticket.audio_ms = 4_000
    await meter.reserve(ticket, 4_000)
    assert await balance_ms(keys, key.id) == 6_000

    record = await meter.close(ticket, "error")
    assert record.outcome == "error"
    assert await balance_ms(keys, key.id) == 10_000
    [row] = await usage_of(db, key.id)
    assert row.outcome == "error"
    assert (row.debited_ms, row.quantity, row.cost) == (0, 0.0, 0.0)
    assert row.audio_ms == 4_000
    # Closing again never refunds twice.
    await meter.close(ticket, "error")
    assert await balance_ms(keys, key.id) == 10_000


@dataclass
class LiveSession:
    """A key with credit and the open ticket of a live session on it."""

    keys: KeyRepository
    ring: KeyRing
    key: ApiKey
    meter: Meter
    ticket: UsageTicket


async def live_session(db: Database, credits_seconds: float) -> LiveSession:
    keys = KeyRepository(db)
    ring = KeyRing(keys)
    key, plaintext = await ring.create("alice", credits_seconds=credits_seconds)
    meter = Meter(UsageRepository(db))
    ticket = meter.open(await ring.authenticate(plaintext), "deepgram.listen")
    return LiveSession(keys, ring, key, meter, ticket)


async def test_meter_client_closed_live_audio_pays_what_was_consumed(db: Database) -> None:
    live = await live_session(db, credits_seconds=60)
    keys, key, meter, ticket = live.keys, live.key, live.meter, live.ticket
    ticket.price = Price(0.01, "second")

    await meter.consume(ticket, 1_200)
    assert ticket.debited_ms == RESERVE_STEP_MS  # reserved ahead, one step
    assert await balance_ms(keys, key.id) == 60_000 - RESERVE_STEP_MS
    await meter.consume(ticket, 800)
    assert ticket.debited_ms == RESERVE_STEP_MS  # still inside the first step
    [running] = await usage_of(db, key.id)
    assert running.outcome is None

    record = await meter.close(ticket, "client_closed")
    assert record.outcome == "client_closed"
    assert await balance_ms(keys, key.id) == 58_000
    [row] = await usage_of(db, key.id)
    assert row.outcome == "client_closed"
    assert row.audio_ms == 2_000 and row.debited_ms == 2_000
    assert row.quantity == pytest.approx(2.0) and row.cost == pytest.approx(0.02)


async def test_meter_live_audio_runs_dry_without_going_negative(db: Database) -> None:
    live = await live_session(db, credits_seconds=3)
    keys, key, meter, ticket = live.keys, live.key, live.meter, live.ticket

    await meter.consume(ticket, 1_000)  # a full step doesn't fit; the shortfall does
    await meter.consume(ticket, 1_000)
    assert ticket.debited_ms == 2_000
    with pytest.raises(InsufficientCredits):
        await meter.consume(ticket, 1_500)
    assert await balance_ms(keys, key.id) == 1_000
    record = await meter.close(ticket, "ok")
    assert record.debited_ms == 2_000  # charged what it could reserve
    [row] = await usage_of(db, key.id)
    assert row.audio_ms == 3_500 and row.debited_ms == 2_000
    assert await balance_ms(keys, key.id) == 1_000


async def test_meter_key_made_unlimited_mid_session_keeps_running(db: Database) -> None:
    live = await live_session(db, credits_seconds=60)
    ring, key, meter, ticket = live.ring, live.key, live.meter, live.ticket
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

    rows = await usage_of(db, key.id)
    assert len(rows) == 50
    assert sum(r.outcome == "ok" for r in rows) == 20
    assert sum(r.outcome == "rejected" for r in rows) == 30
    assert sum(r.debited_ms for r in rows) == 30_000
    assert await balance_ms(keys, key.id) == 0


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
    meter = Meter(UsageRepository(db))
    ticket = meter.open(await ring.authenticate(plaintext), "deepgram.listen")
    assert meter.credits_low(ticket, 10_000) is False  # nothing known yet

    await meter.consume(ticket, 1_000)  # reserves 5 s: 15 s left, 4 s of it unused -> 19 s
    assert meter.credits_low(ticket, 10_000) is False
    await meter.consume(ticket, 4_000)
    assert meter.credits_low(ticket, 10_000) is False  # 15 s
    await meter.consume(ticket, 5_000)
    assert ticket.balance_ms == 10_000
    assert meter.credits_low(ticket, 10_000) is False  # exactly at the threshold
    await meter.consume(ticket, 1)  # 5 s left + 4.999 s unused reservation
    assert ticket.balance_ms == 5_000
    assert meter.credits_low(ticket, 10_000) is True
    await meter.close(ticket, "ok")

    rich = meter.open(await ring.authenticate(unlimited_plain), "deepgram.listen")
    await meter.consume(rich, 3_600_000)
    assert meter.credits_low(rich, 10_000) is False


async def test_abandoned_running_records_are_closed_once_with_credit_refunded(db: Database) -> None:
    live = await live_session(db, credits_seconds=10)
    await live.meter.consume(live.ticket, 2_000)
    assert await balance_ms(live.keys, live.key.id) == 10_000 - RESERVE_STEP_MS
    # The worker "dies": its ticket is never closed. A session still running is left alone...
    assert await live.meter.sweep_abandoned(older_than_s=3600) == 0
    # ...and once it is older than any session can be, two workers sweeping at once close it once.
    swept = await asyncio.gather(
        *(Meter(UsageRepository(db)).sweep_abandoned(older_than_s=0) for _ in range(2))
    )
    assert sorted(swept) == [0, 1]
    [row] = await usage_of(db, live.key.id)
    assert row.outcome == "error" and (row.debited_ms, row.cost) == (0, 0.0)
    assert await balance_ms(live.keys, live.key.id) == 10_000


async def test_speech_synthesis_is_recorded_per_character(db: Database) -> None:
    ring = KeyRing(KeyRepository(db))
    key, plaintext = await ring.create("speaker")
    meter = Meter(UsageRepository(db))
    ticket = meter.open(await ring.authenticate(plaintext), "openai.speech")
    ticket.model = "espeak"
    ticket.price = Price(0.000015, "character")
    ticket.characters = 42
    await meter.close(ticket, "client_closed")
    refused = meter.open(await ring.authenticate(plaintext), "openai.speech")
    refused.price, refused.characters = Price(0.000015, "character"), 42
    await meter.close(refused, "upstream_error")

    spoken, failed = sorted(await usage_of(db, key.id), key=lambda row: row.id != ticket.id)
    # "character" is longer than the 8 characters the column first had (PostgreSQL enforces its width).
    assert spoken.unit == "character" and spoken.quantity == 42 and spoken.audio_ms == 0
    assert spoken.cost == pytest.approx(42 * 0.000015)
    assert failed.quantity == 0 and failed.cost == 0, "a provider failure is not billed"
