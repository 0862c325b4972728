"""The database connection: SQLite by default, PostgreSQL by URL; migrations applied with Alembic."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works: it only has to be the same in every earshot process sharing the database.
_MIGRATION_LOCK_ID = 0x6561727368

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///earshot.db"


class DatabaseError(Exception):
    """The database is unreachable or its URL is unusable."""


class Database:
    """An async engine plus the write discipline its backend needs."""

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError as e:
            raise DatabaseError(f"invalid database URL: {e}") from e
        # Plain scheme names mean the async drivers earshot ships with.
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+asyncpg")
        elif parsed.drivername == "sqlite":
            parsed = parsed.set(drivername="sqlite+aiosqlite")
        self.backend = parsed.get_backend_name()
        if self.backend not in ("sqlite", "postgresql"):
            raise DatabaseError(
                f"unsupported database {parsed.drivername!r}: use sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        options: dict[str, Any] = {}
        self._sqlite_file: Path | None = None
        if self.backend == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                self._sqlite_file = Path(parsed.database).expanduser()
                _create_private(self._sqlite_file)
            options["connect_args"] = {"timeout": 30}
        else:
            options.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(parsed, **options)
        if self.backend == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        # SQLite allows one writer; queueing writes here avoids "database is locked" under concurrency.
        self._write_lock = asyncio.Lock() if self.backend == "sqlite" else None

    @property
    def safe_url(self) -> str:
        """The URL without its password, for logs."""
        return self.engine.url.render_as_string(hide_password=True)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that commits on success and rolls back on error."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for queries."""
        async with self.engine.connect() as conn:
            yield conn

    async def upgrade(self) -> None:
        """Apply every pending migration; safe when several processes start at once."""
        try:
            if self._sqlite_file is not None:
                # SQLite has no advisory lock: processes sharing the file take turns on a lock file beside it.
                lock_path = self._sqlite_file.with_name(self._sqlite_file.name + ".migrate")
                lock = await asyncio.to_thread(_lock_file, lock_path)
                try:
                    await self._upgrade()
                finally:
                    lock.close()
            else:
                await self._upgrade()
        except OSError as e:
            raise DatabaseError(f"cannot reach the database at {self.safe_url}: {e}") from e

    async def _upgrade(self) -> None:
        async with self.write() as conn:
            if self.backend == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            await conn.run_sync(_upgrade)

    async def is_current(self) -> bool:
        """Whether every migration has been applied."""
        async with self.read() as conn:
            return await conn.run_sync(_is_current)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _create_private(path: Path) -> None:
    """Create the SQLite file readable by its owner only: it holds key hashes (its journals get the same)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    # The owner's own file may have been made by an older release with the umask's mode.
    if path.stat().st_uid == os.getuid():
        path.chmod(0o600)


def _lock_file(path: Path) -> Any:
    """The open lock file at `path`, held exclusively until it is closed (waits for another holder)."""
    lock = os.fdopen(os.open(path, os.O_CREAT | os.O_RDWR, 0o600), "r+b")
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
    return lock


def _alembic_config(conn: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    return config


def _upgrade(conn: Connection) -> None:
    command.upgrade(_alembic_config(conn), "head")


def _is_current(conn: Connection) -> bool:
    heads = set(ScriptDirectory.from_config(_alembic_config(conn)).get_heads())
    return set(MigrationContext.configure(conn).get_current_heads()) == heads


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
