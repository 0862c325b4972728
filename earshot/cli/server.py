"""The uvicorn server `earshot serve` runs: on shutdown, live sessions are drained before sockets are cut."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from fastapi import FastAPI

from earshot.api.context import Gateway


class DrainingServer(uvicorn.Server):
    """uvicorn, but live sessions are told the server is going and finish their open turn first.

    Left to itself, uvicorn cuts every WebSocket with 1012 before the app hears of the shutdown.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        gateway: Gateway | None = getattr(self.app.state, "gateway", None)
        if gateway is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + gateway.settings.shutdown_grace_s
            await gateway.drain(gateway.settings.shutdown_grace_s)
            # HTTP requests still running share what is left of the grace period.
            self.config.timeout_graceful_shutdown = max(1, round(deadline - loop.time()))
        await super().shutdown(sockets)
