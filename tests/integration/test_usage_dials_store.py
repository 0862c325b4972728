"""Usage totals and runtime dials against a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from earshot.accounts.keys import KeyRing, new_key
from earshot.dials import DialBoard, DialError, Dials
from earshot.settings import Settings
from earshot.store.db import Database
from earshot.store.records import Outcome, UsageRecord, UsageTotal
from earshot.store.repositories import DialRepository, KeyRepository, UsageRepository

ROUTE = "openai.transcriptions"


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
