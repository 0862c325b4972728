"""Stored sessions and their items; an approval's decision is claimed by one conditional UPDATE."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import RowMapping

from earshot.store.db import Database
from earshot.store.records import NewItem, SessionItemRecord, SessionRecord
from earshot.store.tables import SessionItemRow, SessionRow


def _session(row: RowMapping) -> SessionRecord:
    values = {name: row[name] for name in SessionRecord.__slots__}
    values["tools"] = tuple(row["tools"] or ())
    return SessionRecord(**values)


def _item(row: RowMapping) -> SessionItemRecord:
    return SessionItemRecord(**{name: row[name] for name in SessionItemRecord.__slots__})


@dataclass(frozen=True, slots=True)
class Decision:
    """An approval request after a decision was claimed: whether this claim won, and the request as stored
    (with the winning decision either way)."""

    won: bool
    request: SessionItemRecord


class SessionRepository:
    """Sessions, each owned by one key (None: made while the server was anonymous), and their items.

    Every read and write of a session names its owner and sees only that owner's sessions.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def _owned(key_id: str | None) -> Any:
        return SessionRow.key_id.is_(None) if key_id is None else SessionRow.key_id == key_id

    async def create(self, record: SessionRecord) -> None:
        values = asdict(record)
        values["tools"] = list(record.tools)
        async with self.db.write() as conn:
            await conn.execute(insert(SessionRow).values(**values))

    async def get(self, session_id: str, key_id: str | None) -> SessionRecord | None:
        """The owner's session with this id; None when there is none (or another owner has it)."""
        query = select(SessionRow.__table__).where(SessionRow.id == session_id, self._owned(key_id))
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return _session(row._mapping) if row is not None else None

    async def page(self, key_id: str | None, *, limit: int, after: str | None = None) -> list[SessionRecord]:
        """Up to `limit` of the owner's sessions, newest first, starting after the session `after`."""
        query = (
            select(SessionRow.__table__)
            .where(self._owned(key_id))
            .order_by(SessionRow.created_at.desc(), SessionRow.id.desc())
            .limit(limit)
        )
        async with self.db.read() as conn:
            if after is not None:
                cursor = (
                    await conn.execute(
                        select(SessionRow.created_at).where(SessionRow.id == after, self._owned(key_id))
                    )
                ).first()
                if cursor is None:
                    return []
                query = query.where(
                    or_(
                        SessionRow.created_at < cursor[0],
                        and_(SessionRow.created_at == cursor[0], SessionRow.id < after),
                    )
                )
            return [_session(row._mapping) for row in await conn.execute(query)]

    async def end(self, session_id: str, key_id: str | None, now: datetime) -> SessionRecord | None:
        """Mark the owner's session ended (once; ending it again changes nothing); None when not theirs."""
        async with self.db.write() as conn:
            await conn.execute(
                update(SessionRow)
                .where(SessionRow.id == session_id, self._owned(key_id), SessionRow.state == "active")
                .values(state="ended", ended_at=now, updated_at=now)
            )
        return await self.get(session_id, key_id)

    async def items(self, session_id: str) -> list[SessionItemRecord]:
        """The session's items in order."""
        query = (
            select(SessionItemRow.__table__)
            .where(SessionItemRow.session_id == session_id)
            .order_by(SessionItemRow.position)
        )
        async with self.db.read() as conn:
            return [_item(row._mapping) for row in await conn.execute(query)]

    async def append(self, session_id: str, items: list[NewItem], now: datetime) -> list[SessionItemRecord]:
        """Add items after the session's last one, in one transaction (positions are unique per session)."""
        if not items:
            return []
        added: list[SessionItemRecord] = []
        async with self.db.write() as conn:
            last = (
                await conn.execute(
                    select(func.coalesce(func.max(SessionItemRow.position), 0)).where(
                        SessionItemRow.session_id == session_id
                    )
                )
            ).scalar_one()
            for offset, item in enumerate(items, start=1):
                record = SessionItemRecord(
                    id=str(item.data["id"]),
                    session_id=session_id,
                    position=int(last) + offset,
                    type=item.type,
                    call_id=item.call_id,
                    data=item.data,
                    approve=None,
                    reason=None,
                    decided_at=None,
                    created_at=now,
                )
                await conn.execute(insert(SessionItemRow).values(**asdict(record)))
                added.append(record)
            await conn.execute(update(SessionRow).where(SessionRow.id == session_id).values(updated_at=now))
        return added

    async def rewrite(self, session_id: str, item: NewItem, now: datetime) -> bool:
        """Replace a stored message item's content (an answer cut to what was heard); False when the session
        has no such message."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(SessionItemRow)
                .where(
                    SessionItemRow.id == str(item.data["id"]),
                    SessionItemRow.session_id == session_id,
                    SessionItemRow.type == item.type,
                )
                .values(data=item.data)
            )
            if result.rowcount != 1:
                return False
            await conn.execute(update(SessionRow).where(SessionRow.id == session_id).values(updated_at=now))
        return True

    async def decide(
        self, session_id: str, approval_id: str, approve: bool, reason: str | None, now: datetime
    ) -> Decision | None:
        """Claim the decision of an approval request: exactly one claim wins, however many race (one
        conditional UPDATE). None when the session has no such request."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(SessionItemRow)
                .where(
                    SessionItemRow.id == approval_id,
                    SessionItemRow.session_id == session_id,
                    SessionItemRow.type == "mcp_approval_request",
                    SessionItemRow.approve.is_(None),
                )
                .values(approve=approve, reason=reason, decided_at=now)
            )
            won = result.rowcount == 1
            row = (
                await conn.execute(
                    select(SessionItemRow.__table__).where(
                        SessionItemRow.id == approval_id,
                        SessionItemRow.session_id == session_id,
                        SessionItemRow.type == "mcp_approval_request",
                    )
                )
            ).first()
        if row is None:
            return None
        return Decision(won, _item(row._mapping))
