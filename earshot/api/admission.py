"""Letting a request or session in: who it is, whether it's within its limits, and its usage ticket.

Every API route and live session goes through `Accounts.admit`, then closes the Admission exactly once
with an outcome; the Admission releases the session slot and writes the usage record.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from types import TracebackType

from redis.exceptions import RedisError
from starlette.requests import ClientDisconnect

from earshot.accounts.errors import AccessDenied, InvalidKey
from earshot.accounts.keys import KeyRing, check_model
from earshot.accounts.limits import RateLimiter, SessionGate, SessionLease
from earshot.accounts.metering import Meter, Price, UsageTicket
from earshot.accounts.revocation import RevocationFeed
from earshot.api.metrics import Metrics
from earshot.dials import DialBoard
from earshot.engines.base import UpstreamError
from earshot.routing.gate import ServerBusy
from earshot.routing.router import Route
from earshot.routing.synthesis import SpeechRoute
from earshot.store.records import KeyRecord, Outcome, UsageRecord

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Admission:
    """An admitted request or session: its key (None when anonymous), usage ticket and session slot."""

    accounts: Accounts
    key: KeyRecord | None
    ticket: UsageTicket
    lease: SessionLease | None
    handed_off: bool = False
    record: UsageRecord | None = field(default=None)

    @property
    def key_id(self) -> str | None:
        return self.key.id if self.key is not None else None

    def use_model(self, requested: str, route: Route, names: set[str]) -> None:
        """Check the key may use the routed model (by any of its names) and price the ticket by it."""
        if self.key is not None:
            check_model(self.key, requested, names)
        self.ticket.model = route.model_id
        self.ticket.price = Price(route.spec.price, route.spec.unit)

    def use_speech_model(self, requested: str, route: SpeechRoute, names: set[str], characters: int) -> None:
        """Check the key may use the synthesis model and price the ticket by its characters."""
        if self.key is not None:
            check_model(self.key, requested, names)
        self.ticket.model = route.model_id
        self.ticket.price = Price(route.spec.price, route.spec.unit)
        self.ticket.characters = characters

    async def reserve(self, audio_ms: int) -> None:
        """Count one-shot audio and debit credit for it before the work starts."""
        self.ticket.audio_ms = audio_ms
        await self.accounts.meter.reserve(self.ticket, audio_ms)

    def count_tokens(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Count a chat model call's tokens on the usage record."""
        self.ticket.prompt_tokens += prompt_tokens
        self.ticket.completion_tokens += completion_tokens

    async def finish(self, outcome: Outcome) -> UsageRecord:
        """Release the session slot and write the usage record; later calls return the first record."""
        if self.record is not None:
            return self.record
        closing = self.accounts.meter.close(self.ticket, outcome)
        self.accounts.metrics.active_sessions.dec()
        if self.lease is not None:
            lease, self.lease = self.lease, None
            releasing = asyncio.ensure_future(self.accounts.gate.release(lease))
            try:
                await asyncio.shield(releasing)
            except (RedisError, OSError) as e:
                # The slot's lease expires on its own; the usage record matters more.
                log.warning("could not release a session slot of key %s: %s", lease.key_id, e)
        self.record = await asyncio.shield(closing)
        if self.record.model is not None and self.record.audio_ms:
            self.accounts.metrics.audio_seconds.labels(self.record.model).inc(self.record.audio_ms / 1000)
        log.debug(
            "usage record=%s key=%s route=%s model=%s audio_s=%.3f outcome=%s",
            self.record.id,
            self.record.key_id or "anonymous",
            self.record.route,
            self.record.model or "-",
            self.record.audio_ms / 1000,
            outcome,
        )
        return self.record

    def hand_off(self) -> None:
        """The response streams on after the handler returns; whoever streams it calls finish."""
        self.handed_off = True

    async def __aenter__(self) -> Admission:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None and self.handed_off:
            return
        await self.finish(outcome_of(exc))


def outcome_of(exc: BaseException | None) -> Outcome:
    """The usage outcome for how a request ended."""
    if exc is None:
        return "ok"
    if isinstance(exc, ClientDisconnect | asyncio.CancelledError):
        return "client_closed"
    if isinstance(exc, UpstreamError) or isinstance(exc.__cause__, UpstreamError):
        return "upstream_error"
    if isinstance(exc, TimeoutError):
        return "timeout"
    status = getattr(exc, "status", None)
    if isinstance(exc, AccessDenied) or (isinstance(status, int) and status < 500):
        return "rejected"
    if isinstance(exc, ServerBusy) or isinstance(exc.__cause__, ServerBusy):
        # Refused for want of capacity, not failed: nothing was done.
        return "rejected"
    return "error"


class Accounts:
    """Keys, limits, dials and metering together, as every route uses them."""

    def __init__(
        self,
        keyring: KeyRing,
        limiter: RateLimiter,
        gate: SessionGate,
        meter: Meter,
        dials: DialBoard,
        revocations: RevocationFeed,
        metrics: Metrics,
    ) -> None:
        self.keyring = keyring
        self.revocations = revocations
        revocations.subscribe(keyring.forget)
        self.limiter = limiter
        self.gate = gate
        self.meter = meter
        self.dials = dials
        self.metrics = metrics
        self._warned_anonymous = False

    async def identify(self, credential: str | None) -> KeyRecord | None:
        """The caller's key; None when the server has no keys yet (anonymous); InvalidKey otherwise."""
        if not await self.keyring.any_keys():
            if not self._warned_anonymous:
                self._warned_anonymous = True
                log.warning("no API keys exist: serving requests anonymously until one is created")
            return None
        if credential is None:
            raise InvalidKey("missing API key")
        return await self.keyring.authenticate(credential)

    async def admit(
        self, credential: str | None, client_ip: str, bucket: str, route: str, ip_rpm: int | None = None
    ) -> Admission:
        """Apply the address limit (the bucket's own `ip_rpm` when given, else the `ip_rpm` dial),
        authenticate, apply the key's limits, and open a usage ticket."""
        dials = self.dials.current
        # The address limit comes first so that guessing keys is throttled too.
        await self.limiter.hit(f"ip:{bucket}:{client_ip}", dials.ip_rpm if ip_rpm is None else ip_rpm)
        key = await self.identify(credential)
        key_scope = f"key:{key.id}" if key is not None else "key:anonymous"
        await self.limiter.hit(key_scope, (key.rpm if key and key.rpm is not None else dials.default_rpm))
        lease = None
        max_sessions = (
            key.max_sessions if key and key.max_sessions is not None else dials.default_max_sessions
        )
        if key is not None and max_sessions > 0:
            lease = await self.gate.acquire(key.id, max_sessions)
        self.metrics.active_sessions.inc()
        return Admission(self, key, self.meter.open(key, route), lease)
