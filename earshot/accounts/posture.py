"""The default posture: anonymous only when nobody else can reach the server, or when told so."""

from __future__ import annotations

from earshot.settings import Settings
from earshot.store.repositories import KeyRepository


class StartupRefused(RuntimeError):
    """The configuration is unsafe to serve (for example: no keys on a public address)."""


async def check_anonymous_posture(settings: Settings, keys: KeyRepository) -> None:
    """Refuse to serve without keys on a non-loopback address unless anonymous access is allowed."""
    if settings.binds_loopback or settings.allow_anonymous:
        return
    if await keys.count() == 0:
        raise StartupRefused(
            f"refusing to serve {settings.host} with no API keys: create one with `earshot keys create`, "
            "or pass --allow-anonymous to serve without authentication"
        )
