"""What every route needs from the running app, built once by the app factory."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import Request

from earshot.routing.router import Router
from earshot.settings import Settings


@dataclass(slots=True)
class Gateway:
    """The shared objects of one running server."""

    settings: Settings
    router: Router
    decode_limiter: asyncio.Semaphore


def get_gateway(request: Request) -> Gateway:
    """FastAPI dependency: the app's Gateway."""
    gateway: Gateway = request.app.state.gateway
    return gateway
