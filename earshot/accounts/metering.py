"""Per-second metering: one usage record per request or session, credits moved atomically with it."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from earshot.accounts.errors import InsufficientCredits
from earshot.store.records import KeyRecord, Outcome, Unit, UsageRecord
from earshot.store.repositories import UsageRepository

log = logging.getLogger(__name__)

# Outcomes the caller pays for; the others (server faults, refusals) are recorded at no charge.
BILLABLE_OUTCOMES: frozenset[Outcome] = frozenset(
    {"ok", "client_closed", "timeout", "revoked", "max_duration", "insufficient_credits", "shutdown"}
)
# Live sessions reserve credit ahead of the audio in steps this long, so the store isn't hit per chunk.
RESERVE_STEP_MS = 5_000


@dataclass(frozen=True, slots=True)
class Price:
    """What a model costs per unit: of audio (`minute` rounds up per request), or of text (`character`)."""

    amount: float = 0.0
    unit: Unit = "second"

    def quantity(self, audio_ms: int, characters: int = 0) -> float:
        """Billed units for this much audio, or for this many characters of text."""
        if self.unit == "character":
            return float(characters)
        if self.unit == "minute":
            return float(math.ceil(audio_ms / 60_000))
        return audio_ms / 1000


@dataclass(slots=True)
class UsageTicket:
    """The running meter of one request or session; closed exactly once by the Meter."""

    id: str
    key: KeyRecord | None
    route: str
    started_at: datetime
    model: str | None = None
    price: Price = field(default_factory=Price)
    audio_ms: int = 0
    # Characters of text synthesized (speech synthesis is priced per character).
    characters: int = 0
    # A chat model's tokens (a session's text turn), counted beside the audio.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    debited_ms: int = 0
    balance_ms: int | None = None
    opened: bool = False
    closed: asyncio.Future[UsageRecord] | None = None
    # Serialises credit moves with the close, so a debit still in flight is refunded too.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def key_id(self) -> str | None:
        return self.key.id if self.key is not None else None

    @property
    def credit_left_ms(self) -> int | None:
        """The key's credit left, counting what this ticket holds unused; None when not known or unlimited."""
        if self.balance_ms is None:
            return None
        return self.balance_ms + max(0, self.debited_ms - self.audio_ms)

    @property
    def limited(self) -> bool:
        """Whether the key has a credit balance (rather than unlimited or anonymous)."""
        return self.key is not None and self.key.credits_ms is not None


class Meter:
    """Opens tickets, reserves credit for them, and writes each one's usage record once."""

    def __init__(self, repository: UsageRepository) -> None:
        self.repository = repository
        self._closing: set[asyncio.Task[UsageRecord]] = set()

    def open(self, key: KeyRecord | None, route: str) -> UsageTicket:
        """A ticket for a new request or session (nothing is written until credit moves or it closes)."""
        return UsageTicket(id=uuid.uuid4().hex, key=key, route=route, started_at=datetime.now(UTC))

    async def reserve(self, ticket: UsageTicket, audio_ms: int) -> None:
        """Debit credit for audio about to be processed; InsufficientCredits if the balance is short."""
        if not ticket.limited or audio_ms <= 0:
            return
        async with ticket.lock:
            await self._debit(ticket, audio_ms)

    async def _debit(self, ticket: UsageTicket, audio_ms: int) -> None:
        assert ticket.key is not None
        if ticket.closed is not None:
            raise InsufficientCredits("the session has ended")
        if not ticket.opened:
            running = replace(self._record(ticket, None), debited_ms=audio_ms)
            debit = await self.repository.open_with_debit(running, audio_ms)
            ticket.opened = debit is not None
        else:
            debit = await self.repository.debit(ticket.id, ticket.key.id, audio_ms)
        if debit is None:
            raise InsufficientCredits(
                f"this API key has too few credit seconds left for {audio_ms / 1000:.3f} s of audio"
            )
        ticket.debited_ms += audio_ms
        ticket.balance_ms = debit.balance_ms

    async def consume(self, ticket: UsageTicket, audio_ms: int) -> None:
        """Count live audio, reserving credit ahead in steps; InsufficientCredits when it runs out."""
        ticket.audio_ms += audio_ms
        if not ticket.limited:
            return
        shortfall = ticket.audio_ms - ticket.debited_ms
        if shortfall <= 0:
            return
        try:
            await self.reserve(ticket, max(shortfall, RESERVE_STEP_MS))
        except InsufficientCredits:
            await self.reserve(ticket, shortfall)

    def credits_low(self, ticket: UsageTicket, threshold_ms: int) -> bool:
        """Whether the key's credit left (counting what this ticket holds unused) is under the threshold.

        Live sessions pass the `credits_low_seconds` dial as it stands when they ask.
        """
        left_ms = ticket.credit_left_ms
        return left_ms is not None and left_ms < threshold_ms

    def close(self, ticket: UsageTicket, outcome: Outcome) -> asyncio.Future[UsageRecord]:
        """Write the ticket's record (once, whatever is called later) and refund unused credit.

        The write runs as its own task so a cancelled caller (a client gone away) can't interrupt it;
        await the result with asyncio.shield if the caller may be cancelled.
        """
        if ticket.closed is not None:
            return ticket.closed
        task = asyncio.get_running_loop().create_task(self._write(ticket, outcome))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        ticket.closed = task
        return task

    async def _write(self, ticket: UsageTicket, outcome: Outcome) -> UsageRecord:
        async with ticket.lock:
            return await self._write_locked(ticket, outcome)

    async def _write_locked(self, ticket: UsageTicket, outcome: Outcome) -> UsageRecord:
        billable = outcome in BILLABLE_OUTCOMES
        charged_ms = min(ticket.audio_ms, ticket.debited_ms) if ticket.limited else ticket.audio_ms
        if not billable:
            charged_ms = 0
        charged_characters = ticket.characters if billable else 0
        record = self._record(ticket, outcome, charged_ms=charged_ms, charged_characters=charged_characters)
        if ticket.opened:
            await self.repository.close(record, refund_ms=ticket.debited_ms - record.debited_ms)
        else:
            await self.repository.insert_finished(record)
        return record

    def _record(
        self, ticket: UsageTicket, outcome: Outcome | None, charged_ms: int = 0, charged_characters: int = 0
    ) -> UsageRecord:
        finished = outcome is not None
        quantity = (
            ticket.price.quantity(charged_ms, charged_characters) if charged_ms or charged_characters else 0.0
        )
        return UsageRecord(
            id=ticket.id,
            key_id=ticket.key_id,
            model=ticket.model,
            route=ticket.route,
            audio_ms=ticket.audio_ms,
            debited_ms=(charged_ms if ticket.limited else 0) if finished else ticket.debited_ms,
            quantity=quantity,
            unit=ticket.price.unit,
            cost=round(quantity * ticket.price.amount, 9),
            outcome=outcome,
            started_at=ticket.started_at,
            ended_at=datetime.now(UTC) if finished else None,
            prompt_tokens=ticket.prompt_tokens,
            completion_tokens=ticket.completion_tokens,
            characters=ticket.characters,
        )

    async def sweep_abandoned(self, older_than_s: float) -> int:
        """Close running records no live session can still own, as server errors with their credit refunded.

        A worker that dies mid-request leaves its record running; no session outlives the maximum session
        length, so one older than that (plus a margin) is abandoned. Each is closed at most once, even when
        several workers sweep at the same time.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        swept = 0
        for running in await self.repository.running_before(cutoff):
            closed = replace(
                running, debited_ms=0, quantity=0.0, cost=0.0, outcome="error", ended_at=datetime.now(UTC)
            )
            if await self.repository.close(closed, refund_ms=running.debited_ms):
                swept += 1
        if swept:
            log.warning("closed %d abandoned usage record(s) as errors and refunded their credit", swept)
        return swept

    async def drain(self) -> None:
        """Wait for every record still being written (at shutdown)."""
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
