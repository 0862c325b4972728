"""Runtime dials: settings an admin can change while earshot runs, shared by every worker.

Defaults come from Settings; changes are stored in the database, and each worker re-reads them every
REFRESH_S, so a change made through any worker (or the CLI) applies everywhere within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from earshot.settings import Settings
from earshot.store.repositories import DialRepository

log = logging.getLogger(__name__)
REFRESH_S = 0.5
# Upper bounds: past these a value is a typo or an attack, and some (a float of 1e30 as an int) would break
# the database column or the arithmetic that uses them.
MAX_UPLOAD_BYTES_BOUND = 16 * 1024**3
MAX_RATE = 10_000_000
MAX_SESSIONS = 1_000_000
DAY_S = 86_400.0
MAX_SECONDS = 1e9


class Dials(BaseModel):
    """The values of every runtime dial."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max_upload_bytes: int = Field(
        gt=0, le=MAX_UPLOAD_BYTES_BOUND, description="Largest accepted upload, in bytes"
    )
    default_rpm: int = Field(
        ge=0, le=MAX_RATE, description="Requests per minute for keys without their own limit (0: none)"
    )
    default_max_sessions: int = Field(
        ge=0, le=MAX_SESSIONS, description="Concurrent sessions for keys without their own limit (0: none)"
    )
    ip_rpm: int = Field(
        ge=0, le=MAX_RATE, description="Requests per minute per client IP in each bucket (0: none)"
    )
    keepalive_s: float = Field(
        gt=0, le=DAY_S, description="Live sessions close after this long with no message"
    )
    max_session_s: float = Field(gt=0, le=7 * DAY_S, description="Live sessions close after this long in all")
    credits_low_seconds: float = Field(
        ge=0, le=MAX_SECONDS, description="Credit left under which clients are warned"
    )
    sse_keepalive_s: float = Field(
        ge=0, le=DAY_S, description="Seconds of silence after which an SSE stream sends a keepalive (0: none)"
    )
    transcript_queue_wait_s: float = Field(
        ge=0, le=DAY_S, description="How long a streamed transcript waits for a model's slot, told its place"
    )

    push_to_talk_max_bytes: int = Field(
        gt=0, le=MAX_UPLOAD_BYTES_BOUND, description="Largest push-to-talk clip, in bytes"
    )
    push_to_talk_ip_rpm: int = Field(
        ge=0, le=MAX_RATE, description="Push-to-talk requests per minute per client IP (0: none)"
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> Dials:
        return cls(**{name: getattr(settings, name) for name in cls.model_fields})


class DialError(ValueError):
    """An unknown dial or a value it can't take."""


def check_known(names: Iterable[str]) -> None:
    """DialError naming the first name that is not a dial."""
    unknown = sorted(set(names) - set(Dials.model_fields))
    if unknown:
        raise DialError(f"unknown setting {unknown[0]!r}; known: {', '.join(Dials.model_fields)}")


def validate_changes(current: Dials, changes: dict[str, Any]) -> Dials:
    """The dials with the changes applied, or DialError naming the bad one."""
    check_known(changes)
    try:
        return Dials.model_validate({**current.model_dump(), **changes})
    except ValidationError as e:
        first = e.errors()[0]
        raise DialError(f"invalid {first['loc'][0]}: {first['msg']}") from e


class DialBoard:
    """The current dials of this worker, kept in step with the database."""

    def __init__(self, repository: DialRepository, defaults: Dials) -> None:
        self.repository = repository
        self.defaults = defaults
        self.current = defaults
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> Dials:
        """Re-read the stored changes over the defaults; a bad stored value is skipped, never the others."""
        stored = await self.repository.all()
        current = self.defaults
        for name, value in stored.items():
            if name not in Dials.model_fields:
                continue
            try:
                current = validate_changes(current, {name: value})
            except DialError as e:
                log.warning("ignoring the stored setting %s: %s", name, e)
        self.current = current
        return self.current

    async def set(self, changes: dict[str, Any]) -> Dials:
        """Validate, store and apply changes; DialError if any is bad."""
        updated = validate_changes(self.current, changes)
        values = {name: getattr(updated, name) for name in changes}
        await self.repository.set(values, datetime.now(UTC))
        self.current = updated
        return updated

    async def reset(self, names: list[str]) -> Dials:
        """Return dials to their configured defaults; DialError for an unknown name."""
        check_known(names)
        await self.repository.delete(names)
        return await self.refresh()

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.refresh()
            except (SQLAlchemyError, OSError) as e:
                log.warning("could not refresh settings from the database: %s", e)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
