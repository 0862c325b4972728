"""Queries over the store; every write that moves credits is one conditional statement."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Date, cast, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping

from earshot.store.db import Database
from earshot.store.records import KeyRecord, UsageRecord, UsageTotal
from earshot.store.tables import ApiKeyRow, DialRow, UsageRow

GroupBy = Literal["model", "day", "key"]


def _key(row: RowMapping) -> KeyRecord:
    models = row["models"]
    return KeyRecord(
        id=row["id"],
        name=row["name"],
        secret_hash=row["secret_hash"],
        models=tuple(models) if models is not None else None,
        credits_ms=row["credits_ms"],
        rpm=row["rpm"],
        max_sessions=row["max_sessions"],
        expires_at=row["expires_at"],
        state=row["state"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        revoked_at=row["revoked_at"],
    )


def _usage(row: RowMapping) -> UsageRecord:
    return UsageRecord(**{name: row[name] for name in UsageRecord.__slots__})


def _settle(done: asyncio.Future[bool], result: bool = False, error: BaseException | None = None) -> None:
    if done.done():
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)


def _usage_values(record: UsageRecord) -> dict[str, Any]:
    """A usage record's columns (its fields are all plain values: no `asdict` deep copy needed)."""
    return {name: getattr(record, name) for name in UsageRecord.__slots__}


class KeyRepository:
    """API key rows."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, record: KeyRecord) -> None:
        values = asdict(record)
        values["models"] = list(record.models) if record.models is not None else None
        async with self.db.write() as conn:
            await conn.execute(insert(ApiKeyRow).values(**values))

    async def get(self, key_id: str) -> KeyRecord | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(ApiKeyRow.__table__).where(ApiKeyRow.id == key_id))).first()
        return _key(row._mapping) if row is not None else None

    async def all(self) -> list[KeyRecord]:
        async with self.db.read() as conn:
            rows = await conn.execute(select(ApiKeyRow.__table__).order_by(ApiKeyRow.created_at))
            return [_key(row._mapping) for row in rows]

    async def count(self) -> int:
        async with self.db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(ApiKeyRow))).scalar_one())

    async def update(self, key_id: str, changes: dict[str, Any]) -> KeyRecord | None:
        """Apply field changes; None when no such key."""
        if "models" in changes and changes["models"] is not None:
            changes = {**changes, "models": list(changes["models"])}
        async with self.db.write() as conn:
            result = await conn.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(**changes))
        if result.rowcount == 0:
            return None
        return await self.get(key_id)


class UsageRepository:
    """Usage rows and the credit movements that go with them."""

    def __init__(self, db: Database) -> None:
        self.db = db
        dialect = postgresql if db.backend == "postgresql" else sqlite
        # Built once and executed with each record's values, so SQLAlchemy compiles them once (building a
        # statement with `.values(...)` per record costs more than the write itself).
        self._insert_once = dialect.insert(UsageRow).on_conflict_do_nothing(index_elements=["id"])
        self._insert_running = insert(UsageRow)
        self._pending: list[tuple[dict[str, Any], asyncio.Future[bool]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def open_with_debit(self, record: UsageRecord, debit_ms: int) -> Debit | None:
        """Insert a running record and debit its key in one transaction; None if the balance is short."""
        async with self.db.write() as conn:
            debit = await _debit(conn, record.key_id, debit_ms)
            if debit is None:
                return None
            await conn.execute(self._insert_running, _usage_values(record))
            return debit

    async def debit(self, record_id: str, key_id: str, debit_ms: int) -> Debit | None:
        """Debit more credit for a running record; None if the balance is short."""
        async with self.db.write() as conn:
            debit = await _debit(conn, key_id, debit_ms)
            if debit is None:
                return None
            await conn.execute(
                update(UsageRow)
                .where(UsageRow.id == record_id, UsageRow.outcome.is_(None))
                .values(debited_ms=UsageRow.debited_ms + debit_ms)
            )
            return debit

    async def close(self, record: UsageRecord, refund_ms: int) -> bool:
        """Finish a running record and refund unused credit, exactly once; False if already finished."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(UsageRow)
                .where(UsageRow.id == record.id, UsageRow.outcome.is_(None))
                .values(
                    model=record.model,
                    audio_ms=record.audio_ms,
                    debited_ms=record.debited_ms,
                    quantity=record.quantity,
                    unit=record.unit,
                    cost=record.cost,
                    prompt_tokens=record.prompt_tokens,
                    completion_tokens=record.completion_tokens,
                    characters=record.characters,
                    outcome=record.outcome,
                    ended_at=record.ended_at,
                )
            )
            if result.rowcount == 1 and refund_ms > 0 and record.key_id is not None:
                await conn.execute(
                    update(ApiKeyRow)
                    .where(ApiKeyRow.id == record.key_id, ApiKeyRow.credits_ms.is_not(None))
                    .values(credits_ms=ApiKeyRow.credits_ms + refund_ms)
                )
            return bool(result.rowcount == 1)

    async def running_before(self, cutoff: datetime) -> list[UsageRecord]:
        """Records still running that started before `cutoff` (left behind by a worker that died)."""
        query = select(UsageRow.__table__).where(UsageRow.outcome.is_(None), UsageRow.started_at < cutoff)
        async with self.db.read() as conn:
            return [_usage(row._mapping) for row in (await conn.execute(query)).all()]

    async def insert_finished(self, record: UsageRecord) -> bool:
        """Insert a finished record that moved no credit; idempotent on its id (False if it was there).

        Records finished while a write is under way are written together, in one transaction, as soon as it
        ends (each caller still returns once its own record is stored): under load the store sees one
        commit for many requests rather than one each.
        """
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((_usage_values(record), done))
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    inserted = await self._insert_all([values for values, _ in batch])
                except Exception as e:
                    if len(batch) == 1:
                        _settle(batch[0][1], error=e)
                        continue
                    # One bad record must not fail the others: each is written (or fails) on its own.
                    for values, done in batch:
                        try:
                            _settle(done, (await self._insert_all([values]))[0])
                        except Exception as each_error:
                            _settle(done, error=each_error)
                    continue
                for (_, done), each in zip(batch, inserted, strict=True):
                    _settle(done, each)
        finally:
            self._flushing = None

    async def _insert_all(self, rows: list[dict[str, Any]]) -> list[bool]:
        """Insert the rows in one transaction; whether each was new."""
        async with self.db.write() as conn:
            return [(await conn.execute(self._insert_once, row)).rowcount == 1 for row in rows]

    async def get(self, record_id: str) -> UsageRecord | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(UsageRow.__table__).where(UsageRow.id == record_id))).first()
        return _usage(row._mapping) if row is not None else None

    async def records(
        self, *, key_id: str | None = None, anonymous: bool = False, limit: int = 1000
    ) -> list[UsageRecord]:
        query = select(UsageRow.__table__).order_by(UsageRow.started_at).limit(limit)
        if anonymous:
            query = query.where(UsageRow.key_id.is_(None))
        elif key_id is not None:
            query = query.where(UsageRow.key_id == key_id)
        async with self.db.read() as conn:
            return [_usage(row._mapping) for row in await conn.execute(query)]

    async def totals(
        self,
        *,
        start: datetime,
        end: datetime,
        group_by: GroupBy,
        key_id: str | None = None,
        anonymous: bool = False,
    ) -> list[UsageTotal]:
        """Finished usage in [start, end) summed per group."""
        group: Any = {
            "model": UsageRow.model,
            "key": UsageRow.key_id,
            "day": cast(UsageRow.started_at, Date)
            if self.db.backend == "postgresql"
            else func.date(UsageRow.started_at),
        }[group_by]
        query = (
            select(
                group.label("grp"),
                func.count(),
                func.coalesce(func.sum(UsageRow.audio_ms), 0),
                func.coalesce(func.sum(UsageRow.quantity), 0.0),
                func.coalesce(func.sum(UsageRow.cost), 0.0),
                func.coalesce(func.sum(UsageRow.prompt_tokens), 0),
                func.coalesce(func.sum(UsageRow.completion_tokens), 0),
            )
            .where(UsageRow.outcome.is_not(None), UsageRow.started_at >= start, UsageRow.started_at < end)
            .group_by(group)
            .order_by(group)
        )
        if anonymous:
            query = query.where(UsageRow.key_id.is_(None))
        elif key_id is not None:
            query = query.where(UsageRow.key_id == key_id)
        async with self.db.read() as conn:
            rows = await conn.execute(query)
            return [
                UsageTotal(
                    group=str(grp) if grp is not None else None,
                    requests=int(count),
                    audio_ms=int(audio),
                    quantity=float(quantity),
                    cost=float(cost),
                    prompt_tokens=int(prompt),
                    completion_tokens=int(completion),
                )
                for grp, count, audio, quantity, cost, prompt, completion in rows
            ]


@dataclass(frozen=True, slots=True)
class Debit:
    """A debit that went through, and the key's balance after it (None: the key is unlimited now)."""

    balance_ms: int | None


async def _debit(conn: Any, key_id: str | None, debit_ms: int) -> Debit | None:
    """Take credit from a key in one conditional statement; None when the balance is short."""
    if key_id is None:
        return None
    # A key made unlimited while a session runs keeps running: NULL credit never runs short.
    result = await conn.execute(
        update(ApiKeyRow)
        .where(
            ApiKeyRow.id == key_id,
            or_(ApiKeyRow.credits_ms.is_(None), ApiKeyRow.credits_ms >= debit_ms),
        )
        .values(credits_ms=ApiKeyRow.credits_ms - debit_ms)
        .returning(ApiKeyRow.credits_ms)
    )
    row = result.first()
    if row is None:
        return None
    return Debit(int(row[0]) if row[0] is not None else None)


class DialRepository:
    """Runtime settings changed from their defaults."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> dict[str, Any]:
        async with self.db.read() as conn:
            rows = await conn.execute(select(DialRow.name, DialRow.value))
            return {name: value for name, value in rows}

    async def delete(self, names: list[str]) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(DialRow).where(DialRow.name.in_(names)))

    async def set(self, values: dict[str, Any], now: datetime) -> None:
        dialect = postgresql if self.db.backend == "postgresql" else sqlite
        async with self.db.write() as conn:
            for name, value in values.items():
                statement = dialect.insert(DialRow).values(name=name, value=value, updated_at=now)
                await conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=["name"], set_={"value": value, "updated_at": now}
                    )
                )
