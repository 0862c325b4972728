"""The uvicorn server `earshot serve` runs: on shutdown, live sessions are drained before sockets are cut."""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from earshot.api.context import Gateway

# How long live sessions get to finish their turn and say goodbye when the server is stopping.
LIVE_DRAIN_S = 5.0


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
            await gateway.drain(LIVE_DRAIN_S)
        await super().shutdown(sockets)
