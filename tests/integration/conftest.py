"""Fixtures for tests against a real store: a migrated database on each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from earshot.store.db import Database
from earshot.store.records import KeyRecord, UsageRecord
from earshot.store.repositories import KeyRepository, UsageRepository


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated, empty earshot database on each backend."""
    database = Database(database_url)
    await database.upgrade()
    yield database
    await database.dispose()


async def key_record(keys: KeyRepository, key_id: str) -> KeyRecord:
    record = await keys.get(key_id)
    assert record is not None
    return record


async def balance_ms(keys: KeyRepository, key_id: str) -> int | None:
    return (await key_record(keys, key_id)).credits_ms


async def usage_of(db: Database, key_id: str | None = None) -> list[UsageRecord]:
    return await UsageRepository(db).records(key_id=key_id)
