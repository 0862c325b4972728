"""The sessions store on each backend: ownership, ending, items in order, and approval claims that exactly
one of many racing deciders wins."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from earshot.store.db import Database
from earshot.store.records import NewItem, SessionRecord
from earshot.store.sessions import SessionRepository


def session(session_id: str, key_id: str | None) -> SessionRecord:
    now = datetime.now(UTC)
    return SessionRecord(
        id=session_id,
        key_id=key_id,
        end_user="user-7",
        chat_model="helper",
        instructions="Be brief.",
        tools=({"type": "function", "name": "lookup", "requires_approval": True},),
        voice=None,
        state="active",
        created_at=now,
        updated_at=now,
        ended_at=None,
    )


async def test_a_session_is_seen_only_by_its_owner_and_ends_once(db: Database) -> None:
    sessions = SessionRepository(db)
    await sessions.create(session("sess_a", "key1"))
    await sessions.create(session("sess_b", None))
    mine = await sessions.get("sess_a", "key1")
    assert mine is not None and mine.tools[0]["requires_approval"] is True
    assert await sessions.get("sess_a", "key2") is None
    assert await sessions.get("sess_a", None) is None
    assert [s.id for s in await sessions.page(None, limit=10)] == ["sess_b"]
    assert await sessions.end("sess_a", "key2", datetime.now(UTC)) is None
    ended = await sessions.end("sess_a", "key1", datetime.now(UTC))
    assert ended is not None and ended.state == "ended" and ended.ended_at is not None
    again = await sessions.end("sess_a", "key1", datetime.now(UTC))
    assert again is not None and again.ended_at == ended.ended_at


async def test_items_keep_their_order_across_appends(db: Database) -> None:
    sessions = SessionRepository(db)
    await sessions.create(session("sess_c", "key1"))
    now = datetime.now(UTC)
    await sessions.append(
        "sess_c", [NewItem("message", {"id": "i1", "type": "message", "role": "user"})], now
    )
    await sessions.append(
        "sess_c",
        [
            NewItem("function_call", {"id": "i2", "type": "function_call"}, call_id="c1"),
            NewItem("function_call_output", {"id": "i3", "type": "function_call_output"}, call_id="c1"),
        ],
        now,
    )
    items = await sessions.items("sess_c")
    assert [(item.id, item.position, item.call_id) for item in items] == [
        ("i1", 1, None),
        ("i2", 2, "c1"),
        ("i3", 3, "c1"),
    ]


async def test_a_message_rewritten_keeps_its_place_and_only_its_own_session_is_touched(db: Database) -> None:
    sessions = SessionRepository(db)
    await sessions.create(session("sess_r", "key1"))
    now = datetime.now(UTC)
    said = {
        "id": "i1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "a b"}],
    }
    await sessions.append("sess_r", [NewItem("message", said)], now)
    heard = {**said, "content": [{"type": "output_text", "text": "a"}]}
    assert await sessions.rewrite("sess_r", NewItem("message", heard), now)
    assert not await sessions.rewrite("sess_other", NewItem("message", heard), now)
    assert not await sessions.rewrite("sess_r", NewItem("message", {**heard, "id": "i9"}), now)
    [item] = await sessions.items("sess_r")
    assert (item.id, item.position, item.data["content"][0]["text"]) == ("i1", 1, "a")


async def test_of_many_racing_decisions_exactly_one_wins_and_all_see_it(db: Database) -> None:
    sessions = SessionRepository(db)
    await sessions.create(session("sess_d", "key1"))
    request = NewItem("mcp_approval_request", {"id": "mcpr_1", "type": "mcp_approval_request"}, call_id="c9")
    await sessions.append("sess_d", [request], datetime.now(UTC))
    decisions = await asyncio.gather(
        *(
            sessions.decide("sess_d", "mcpr_1", index % 2 == 0, f"decider {index}", datetime.now(UTC))
            for index in range(20)
        )
    )
    assert all(decision is not None for decision in decisions)
    winners = [decision for decision in decisions if decision is not None and decision.won]
    assert len(winners) == 1
    won = winners[0].request
    assert {(d.request.approve, d.request.reason) for d in decisions if d is not None} == {
        (won.approve, won.reason)
    }
    assert await sessions.decide("sess_d", "mcpr_nope", True, None, datetime.now(UTC)) is None
    assert await sessions.decide("sess_other", "mcpr_1", True, None, datetime.now(UTC)) is None
