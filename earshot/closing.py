"""Closing an async iterator however its reading ends: what it holds is released then, not at collection."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")


@contextlib.asynccontextmanager
async def closing(iterator: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Yield `iterator`, then close it (when it can be closed) on the way out, cancelled or not: an engine's
    segments free their gate slot, a chat stream or a synthesis stops, at once."""
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
