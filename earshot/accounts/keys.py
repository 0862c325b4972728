"""API keys: `es_<id>_<secret>`, only a SHA-256 of the secret stored, looked up through a short cache."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from earshot.accounts.errors import InvalidKey, KeyExpired, KeyRevoked, ModelNotAllowed
from earshot.store.records import KeyRecord
from earshot.store.repositories import KeyRepository

_KEY_PATTERN = re.compile(r"^es_([a-z0-9]{12})_([A-Za-z0-9]{40})$")
_SECRET_ALPHABET = string.ascii_letters + string.digits
# Long enough that a revocation in another process is seen within a second, short enough to spare the DB.
CACHE_TTL_S = 0.3
# Callers can make up key ids at will; the cache forgets its oldest entries rather than grow without bound.
CACHE_MAX_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's settings as callers and admins see them (no secret, no hash)."""

    id: str
    name: str
    models: tuple[str, ...] | None
    credits_seconds: float | None
    rpm: int | None
    max_sessions: int | None
    expires_at: datetime | None
    state: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_record(cls, record: KeyRecord) -> ApiKey:
        return cls(
            id=record.id,
            name=record.name,
            models=record.models,
            credits_seconds=record.credits_ms / 1000 if record.credits_ms is not None else None,
            rpm=record.rpm,
            max_sessions=record.max_sessions,
            expires_at=record.expires_at,
            state=record.state,
            created_at=record.created_at,
            revoked_at=record.revoked_at,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON shape used by the admin API and `earshot keys --json`."""
        return {
            "id": self.id,
            "name": self.name,
            "models": list(self.models) if self.models is not None else None,
            "credits_seconds": self.credits_seconds,
            "rpm": self.rpm,
            "max_sessions": self.max_sessions,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "state": self.state,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True, slots=True)
class KeyChanges:
    """Fields to change on a key; UNSET fields are left alone, None clears a limit."""

    name: str | None = None
    models: tuple[str, ...] | None = UNSET
    credits_seconds: float | None = UNSET
    rpm: int | None = UNSET
    max_sessions: int | None = UNSET
    expires_at: datetime | None = UNSET


def hash_secret(secret: str) -> str:
    """The stored form of a key's secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _KEY_PATTERN.match(token.strip())
    return (match.group(1), match.group(2)) if match else None


def new_key() -> tuple[str, str]:
    """A fresh (key id, plaintext key)."""
    key_id = secrets.token_hex(6)
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
    return key_id, f"es_{key_id}_{secret}"


def _now() -> datetime:
    return datetime.now(UTC)


class KeyRing:
    """Creates, changes and checks API keys; reads go through a cache of CACHE_TTL_S."""

    def __init__(self, repository: KeyRepository, cache_ttl_s: float = CACHE_TTL_S) -> None:
        self.repository = repository
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        # Keys are revoked, never deleted: once one exists, the answer never changes again.
        self._keys_exist = False
        self._keys_checked_at = -math.inf

    async def create(
        self,
        name: str,
        *,
        models: tuple[str, ...] | None = None,
        credits_seconds: float | None = None,
        rpm: int | None = None,
        max_sessions: int | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[ApiKey, str]:
        """A new active key and its plaintext, which is shown once and never stored."""
        key_id, plaintext = new_key()
        parsed = parse_key(plaintext)
        assert parsed is not None
        now = _now()
        record = KeyRecord(
            id=key_id,
            name=name,
            secret_hash=hash_secret(parsed[1]),
            models=models,
            credits_ms=_to_ms(credits_seconds),
            rpm=rpm,
            max_sessions=max_sessions,
            expires_at=expires_at,
            state="active",
            created_at=now,
            updated_at=now,
            revoked_at=None,
        )
        await self.repository.insert(record)
        self._keys_exist = True
        return ApiKey.from_record(record), plaintext

    async def list(self) -> list[ApiKey]:
        return [ApiKey.from_record(record) for record in await self.repository.all()]

    async def get(self, key_id: str) -> ApiKey | None:
        record = await self.repository.get(key_id)
        return ApiKey.from_record(record) if record is not None else None

    async def update(self, key_id: str, changes: KeyChanges) -> ApiKey | None:
        """Change a key's settings; None when there is no such key."""
        values: dict[str, Any] = {"updated_at": _now()}
        if changes.name is not None:
            values["name"] = changes.name
        for field in ("models", "rpm", "max_sessions", "expires_at"):
            value = getattr(changes, field)
            if value is not UNSET:
                values[field] = value
        if changes.credits_seconds is not UNSET:
            values["credits_ms"] = _to_ms(changes.credits_seconds)
        record = await self.repository.update(key_id, values)
        self.forget(key_id)
        return ApiKey.from_record(record) if record is not None else None

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke a key for good (again is a no-op); None when there is no such key."""
        current = await self.repository.get(key_id)
        if current is None or current.state == "revoked":
            return ApiKey.from_record(current) if current is not None else None
        now = _now()
        record = await self.repository.update(
            key_id, {"state": "revoked", "revoked_at": now, "updated_at": now}
        )
        self.forget(key_id)
        return ApiKey.from_record(record) if record is not None else None

    def forget(self, key_id: str) -> None:
        """Drop a key from the cache so the next check reads the store."""
        self._cache.pop(key_id, None)

    async def any_keys(self) -> bool:
        """Whether any key was ever created (then every request needs one)."""
        now = time.monotonic()
        if not self._keys_exist and now - self._keys_checked_at > self.cache_ttl_s:
            self._keys_exist = await self.repository.count() > 0
            self._keys_checked_at = now
        return self._keys_exist

    async def record(self, key_id: str) -> KeyRecord | None:
        """The key's stored settings, at most CACHE_TTL_S old."""
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is None or now - cached[0] > self.cache_ttl_s:
            cached = (now, await self.repository.get(key_id))
            self._cache.pop(key_id, None)
            while len(self._cache) >= CACHE_MAX_KEYS:
                del self._cache[next(iter(self._cache))]
            self._cache[key_id] = cached
        return cached[1]

    async def authenticate(self, token: str) -> KeyRecord:
        """The active key this plaintext names, or InvalidKey / KeyRevoked / KeyExpired."""
        parsed = parse_key(token)
        if parsed is None:
            raise InvalidKey("invalid API key")
        key_id, secret = parsed
        record = await self.record(key_id)
        if record is None or not hmac.compare_digest(record.secret_hash, hash_secret(secret)):
            raise InvalidKey("invalid API key")
        _check_usable(record)
        return record

    async def is_active(self, key_id: str) -> bool:
        """Whether the key is still active and unexpired (for cutting off live sessions)."""
        record = await self.record(key_id)
        if record is None:
            return False
        try:
            _check_usable(record)
        except InvalidKey:
            return False
        return True


def _check_usable(record: KeyRecord) -> None:
    if record.state == "revoked":
        raise KeyRevoked("this API key has been revoked")
    if record.expires_at is not None and record.expires_at <= _now():
        raise KeyExpired("this API key has expired")


def check_model(record: KeyRecord, requested: str, names: set[str]) -> None:
    """Raise ModelNotAllowed unless the key lists the model by any of its names (id or alias)."""
    if record.models is not None and names.isdisjoint(record.models):
        raise ModelNotAllowed(requested)


def _to_ms(seconds: float | _Unset | None) -> int | None:
    if seconds is None or isinstance(seconds, _Unset):
        return None
    return round(seconds * 1000)
