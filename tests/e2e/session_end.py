"""How a live session ended, as its caller and the ledger see it: the messages up to the close, its record."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from earshot.store.records import UsageRecord
from tests.conftest import usage_records, wait_until


async def until_closed(ws: ClientConnection, timeout_s: float = 15) -> tuple[list[dict[str, Any]], int]:
    """Every JSON message the server sent until it closed the connection, and its close code."""
    messages = []
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), timeout_s)))
    assert closed.value.rcvd is not None, "the server closed the connection with a close frame"
    return messages, closed.value.rcvd.code


async def finished_records(database_url: str, key_id: str, timeout_s: float = 10) -> list[UsageRecord]:
    """A key's usage records, once at least one of them is finished (has an outcome)."""

    def mine() -> list[UsageRecord]:
        return [record for record in usage_records(database_url) if record.key_id == key_id]

    await asyncio.to_thread(wait_until, lambda: any(record.outcome for record in mine()), timeout_s)
    return await asyncio.to_thread(mine)


async def the_record(database_url: str, key_id: str, timeout_s: float = 10) -> UsageRecord:
    """The one finished usage record of a key (waiting for it to be written)."""
    records = await finished_records(database_url, key_id, timeout_s)
    assert len(records) == 1, records
    return records[0]
