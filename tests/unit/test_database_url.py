"""Database URLs: plain scheme names pick the bundled async drivers; anything else is a clear error."""

from __future__ import annotations

import pytest

from earshot.store.db import Database, DatabaseError


async def test_plain_scheme_names_use_the_bundled_async_drivers() -> None:
    postgres = Database("postgresql://user:secret@db.internal:5432/earshot")
    assert postgres.engine.url.drivername == "postgresql+asyncpg"
    assert "secret" not in postgres.safe_url
    await postgres.dispose()
    sqlite = Database("sqlite:///:memory:")
    assert sqlite.engine.url.drivername == "sqlite+aiosqlite"
    await sqlite.dispose()


@pytest.mark.parametrize(
    ("url", "message"),
    [("not a url", "invalid database URL"), ("mysql://x/y", "unsupported database 'mysql'")],
)
def test_unusable_urls_are_refused_with_a_reason(url: str, message: str) -> None:
    with pytest.raises(DatabaseError, match=message):
        Database(url)
