"""Stored transcripts: each owned by one key, read and written only by that owner (or the operator)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping

from earshot.store.db import Database
from earshot.store.records import TranscriptRecord
from earshot.store.tables import TranscriptRow


def _transcript(row: RowMapping) -> TranscriptRecord:
    validated = row["validated"]
    return TranscriptRecord(
        id=row["id"],
        key_id=row["key_id"],
        name=row["name"],
        model=row["model"],
        language=row["language"],
        duration_s=float(row["duration_s"]),
        paragraphs=tuple(row["paragraphs"]),
        validated=tuple(validated) if validated is not None else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class TranscriptRepository:
    """Stored transcripts, each owned by one key (or by nobody, made while the server was anonymous).

    Every read and write names the owner (`key_id`, None for anonymous) and sees only that owner's documents;
    `anyone=True` is for the operator's command line, which sees them all.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def _owned(key_id: str | None, anyone: bool) -> Any:
        if anyone:
            return true()
        return TranscriptRow.key_id.is_(None) if key_id is None else TranscriptRow.key_id == key_id

    async def put(self, record: TranscriptRecord) -> TranscriptRecord:
        """Store a machine transcript; one already stored under its id gets the new machine version (its
        validated version and creation time stay). Returns what is stored now."""
        values = asdict(record)
        values["paragraphs"] = list(record.paragraphs)
        values["validated"] = list(record.validated) if record.validated is not None else None
        dialect = postgresql if self.db.backend == "postgresql" else sqlite
        changed = {
            name: values[name]
            for name in ("name", "model", "language", "duration_s", "paragraphs", "updated_at")
        }
        async with self.db.write() as conn:
            await conn.execute(
                dialect.insert(TranscriptRow)
                .values(**values)
                .on_conflict_do_update(index_elements=["id"], set_=changed)
            )
        stored = await self.get(record.id, record.key_id)
        assert stored is not None
        return stored

    async def get(
        self, transcript_id: str, key_id: str | None, *, anyone: bool = False
    ) -> TranscriptRecord | None:
        """The owner's document with this id; None when there is none (or another owner has it)."""
        query = select(TranscriptRow.__table__).where(
            TranscriptRow.id == transcript_id, self._owned(key_id, anyone)
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return _transcript(row._mapping) if row is not None else None

    async def page(
        self, key_id: str | None, *, limit: int, after: str | None = None, anyone: bool = False
    ) -> list[TranscriptRecord]:
        """Up to `limit` of the owner's documents, newest first, starting after the document `after`.

        An `after` that is not one of the owner's documents gives an empty page.
        """
        query = (
            select(TranscriptRow.__table__)
            .where(self._owned(key_id, anyone))
            .order_by(TranscriptRow.created_at.desc(), TranscriptRow.id.desc())
            .limit(limit)
        )
        async with self.db.read() as conn:
            if after is not None:
                cursor = (
                    await conn.execute(
                        select(TranscriptRow.created_at).where(
                            TranscriptRow.id == after, self._owned(key_id, anyone)
                        )
                    )
                ).first()
                if cursor is None:
                    return []
                created_at = cursor[0]
                query = query.where(
                    or_(
                        TranscriptRow.created_at < created_at,
                        and_(TranscriptRow.created_at == created_at, TranscriptRow.id < after),
                    )
                )
            return [_transcript(row._mapping) for row in await conn.execute(query)]

    async def set_validated(
        self, transcript_id: str, key_id: str | None, validated: list[dict[str, Any]] | None, now: datetime
    ) -> TranscriptRecord | None:
        """Keep a reviewed version beside the machine one (None clears it); None when there is no such
        document of the owner's."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(TranscriptRow)
                .where(TranscriptRow.id == transcript_id, self._owned(key_id, False))
                .values(validated=validated, updated_at=now)
            )
        if result.rowcount == 0:
            return None
        return await self.get(transcript_id, key_id)

    async def delete(self, transcript_id: str, key_id: str | None, *, anyone: bool = False) -> bool:
        """Delete the owner's document; False when there is none."""
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(TranscriptRow).where(TranscriptRow.id == transcript_id, self._owned(key_id, anyone))
            )
        return bool(result.rowcount == 1)
