"""Stored transcripts against a real store (SQLite and PostgreSQL): owners, pages, validated versions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from earshot.store.db import Database
from earshot.store.records import TranscriptRecord
from earshot.store.transcripts import TranscriptRepository

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PARAGRAPHS = ({"speaker_no": 0, "speaker_id": "speaker-0", "start": 0.0, "end": 1.5, "text": "hello"},)


def record(document_id: str, key_id: str | None, minutes: int, name: str = "talk.wav") -> TranscriptRecord:
    at = T0 + timedelta(minutes=minutes)
    return TranscriptRecord(
        id=document_id,
        key_id=key_id,
        name=name,
        model="pocketsphinx",
        language="en",
        duration_s=12.5,
        paragraphs=PARAGRAPHS,
        validated=None,
        created_at=at,
        updated_at=at,
    )


async def test_a_document_is_seen_only_by_its_owner(db: Database) -> None:
    transcripts = TranscriptRepository(db)
    await transcripts.put(record("a", "key1", 0))
    await transcripts.put(record("b", None, 1))
    stored = await transcripts.get("a", "key1")
    assert stored is not None and stored.paragraphs == PARAGRAPHS and stored.created_at == T0
    assert await transcripts.get("a", "key2") is None and await transcripts.get("a", None) is None
    assert (await transcripts.get("b", None)) is not None and await transcripts.get("b", "key1") is None
    assert await transcripts.get("a", None, anyone=True) is not None
    assert not await transcripts.delete("a", "key2")
    assert await transcripts.delete("a", "key1") and await transcripts.get("a", "key1") is None


async def test_pages_run_newest_first_and_continue_after_the_last_id(db: Database) -> None:
    transcripts = TranscriptRepository(db)
    for minutes in range(5):
        await transcripts.put(record(f"doc{minutes}", "key1", minutes))
    await transcripts.put(record("other", "key2", 9))
    first = await transcripts.page("key1", limit=2)
    assert [r.id for r in first] == ["doc4", "doc3"]
    second = await transcripts.page("key1", limit=2, after="doc3")
    assert [r.id for r in second] == ["doc2", "doc1"]
    assert [r.id for r in await transcripts.page("key1", limit=2, after="doc1")] == ["doc0"]
    # Another owner's id is no cursor for this one.
    assert await transcripts.page("key1", limit=2, after="other") == []
    assert len(await transcripts.page(None, limit=10, anyone=True)) == 6


async def test_a_validated_version_is_kept_beside_the_machine_one_and_survives_a_new_machine_run(
    db: Database,
) -> None:
    transcripts = TranscriptRepository(db)
    await transcripts.put(record("a", "key1", 0))
    reviewed = [{"speaker_no": 0, "speaker_id": "speaker-0", "start": 0.0, "end": 1.5, "text": "Hello."}]
    later = T0 + timedelta(hours=1)
    saved = await transcripts.set_validated("a", "key1", reviewed, later)
    assert saved is not None and saved.validated == tuple(reviewed) and saved.paragraphs == PARAGRAPHS
    assert saved.updated_at == later
    assert await transcripts.set_validated("a", "key2", reviewed, later) is None
    again = await transcripts.put(record("a", "key1", 30, name="renamed.wav"))
    assert again.name == "renamed.wav" and again.validated == tuple(reviewed) and again.created_at == T0
    cleared = await transcripts.set_validated("a", "key1", None, later)
    assert cleared is not None and cleared.validated is None
