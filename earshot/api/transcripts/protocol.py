"""The SSE answer of POST /v1/transcripts, sans-I/O: fed what happened, it returns the text to send.

A stream moves QUEUED -> TRANSCRIBING -> DONE, or to FAILED from either; a cached document goes from QUEUED
straight to DONE. Each `transcription` event carries the whole document so far (never a delta) with
`current_time` growing to `total_time`, and the last one before `done` always reaches `total_time`. Silence
longer than `keepalive_s` is filled with `: keepalive` comment lines, given the time (`now`, seconds on any
monotonic clock) instead of sleeping. A call that is illegal in the current state raises IllegalTransition.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from earshot.api.transcripts.documents import Document, Paragraph

KEEPALIVE = ": keepalive\n\n"


class StreamState(StrEnum):
    """Where a transcript stream is."""

    QUEUED = "queued"
    TRANSCRIBING = "transcribing"
    DONE = "done"
    FAILED = "failed"


class IllegalTransition(Exception):
    """An event the stream can't take in its current state (a snapshot after `done`, say)."""


def sse_event(name: str, data: dict[str, Any]) -> str:
    """One server-sent event with a JSON payload."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


class TranscriptEvents:
    """The event writer of one streamed transcript (`document_id` is known before any work starts)."""

    def __init__(self, document_id: str, keepalive_s: float, now: float) -> None:
        self.document_id = document_id
        self.keepalive_s = keepalive_s
        self.state = StreamState.QUEUED
        self.paragraphs: list[Paragraph] = []
        self.current_time = 0.0
        self.total_time = 0.0
        self._position: int | None = None
        self._last_sent = now

    @property
    def ended(self) -> bool:
        """True after `done` or `error`: nothing more is sent."""
        return self.state in (StreamState.DONE, StreamState.FAILED)

    def queued(self, position: int, now: float) -> str:
        """The request waits with `position - 1` ahead of it; sent when the position changes."""
        self._require(StreamState.QUEUED, "queued")
        if position == self._position:
            return ""
        self._position = position
        return self._sent(sse_event("queued", {"position": position}), now)

    def started(self, total_time: float, now: float) -> str:
        """The audio is decoded and transcription begins: the first (empty) snapshot."""
        self._require(StreamState.QUEUED, "started")
        self.state = StreamState.TRANSCRIBING
        self.total_time = round(max(0.0, total_time), 3)
        return self._snapshot(now)

    def transcribed(self, paragraphs: Sequence[Paragraph], current_time: float, now: float) -> str:
        """The engine got through `current_time` seconds of audio; `paragraphs` is the whole text so far."""
        self._require(StreamState.TRANSCRIBING, "transcribed")
        self.paragraphs = list(paragraphs)
        self.current_time = max(self.current_time, min(self.total_time, round(current_time, 3)))
        return self._snapshot(now)

    def done(self, document: Document, now: float) -> str:
        """The stored document; a transcription that did not report reaching the end gets a last snapshot."""
        if self.ended:
            raise IllegalTransition(f"done after {self.state}")
        text = ""
        if self.state is StreamState.TRANSCRIBING and self.current_time < self.total_time:
            self.current_time = self.total_time
            text = self._snapshot(now)
        self.state = StreamState.DONE
        return text + self._sent(sse_event("done", document.model_dump(mode="json")), now)

    def error(self, code: str, detail: str, now: float) -> str:
        """The stream failed; nothing was stored."""
        if self.ended:
            raise IllegalTransition(f"error after {self.state}")
        self.state = StreamState.FAILED
        return self._sent(sse_event("error", {"code": code, "detail": detail}), now)

    def tick(self, now: float) -> str:
        """A keepalive comment when the stream has been silent for `keepalive_s` (never after the end)."""
        due_in = self.keepalive_due_in(now)
        if due_in is None or due_in > 0:
            return ""
        return self._sent(KEEPALIVE, now)

    def keepalive_due_in(self, now: float) -> float | None:
        """Seconds until the next keepalive is due (0: now); None when they are off or the stream ended."""
        if self.keepalive_s <= 0 or self.ended:
            return None
        return max(0.0, self._last_sent + self.keepalive_s - now)

    def _snapshot(self, now: float) -> str:
        data = {
            "document_id": self.document_id,
            "paragraphs": [paragraph.model_dump(mode="json") for paragraph in self.paragraphs],
            "current_time": self.current_time,
            "total_time": self.total_time,
        }
        return self._sent(sse_event("transcription", data), now)

    def _require(self, state: StreamState, what: str) -> None:
        if self.state is not state:
            raise IllegalTransition(f"{what} while {self.state}")

    def _sent(self, text: str, now: float) -> str:
        self._last_sent = now
        return text
