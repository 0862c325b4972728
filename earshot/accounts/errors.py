"""Why a caller was refused; each API maps these to its own protocol's errors."""

from __future__ import annotations


class AccessDenied(Exception):
    """The caller may not do this now."""


class InvalidKey(AccessDenied):
    """No key, an unknown key, or a key whose secret doesn't match (401)."""


class KeyRevoked(InvalidKey):
    """The key was revoked (401)."""


class KeyExpired(InvalidKey):
    """The key is past its expiry (401)."""


class ModelNotAllowed(AccessDenied):
    """The key may not use this model (403)."""

    def __init__(self, model_id: str) -> None:
        super().__init__(f"this API key may not use model {model_id!r}")
        self.model_id = model_id


class RateLimited(AccessDenied):
    """Too many requests in the window, or too many sessions at once (429, retry later)."""

    def __init__(self, message: str, retry_after_s: int, *, concurrency: bool = False) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)
        self.concurrency = concurrency


class InsufficientCredits(AccessDenied):
    """The key has too few credit seconds left (429 insufficient_quota; retrying won't help)."""


class ServerDraining(AccessDenied):
    """The server is shutting down and takes no new work (503, retry on another worker or shortly)."""

    def __init__(self) -> None:
        super().__init__("the server is shutting down; try again shortly")
        self.retry_after_s = 5
