"""What every route needs from the running app, built once by the app factory."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import Request
from starlette.requests import HTTPConnection

from earshot.api.admission import Accounts, Admission
from earshot.api.credentials import credential_from
from earshot.api.metrics import Metrics
from earshot.routing.router import Router
from earshot.settings import Settings


@dataclass(slots=True)
class Gateway:
    """The shared objects of one running server."""

    settings: Settings
    router: Router
    decode_limiter: asyncio.Semaphore
    accounts: Accounts
    metrics: Metrics

    async def admit(self, connection: HTTPConnection, *, bucket: str, route: str) -> Admission:
        """Admit an HTTP request or WebSocket handshake by the key it carries."""
        subprotocols = (
            connection.scope.get("subprotocols", []) if connection.scope["type"] == "websocket" else []
        )
        credential = credential_from(connection.headers, connection.query_params, subprotocols)
        peer = connection.client.host if connection.client else "unknown"
        admission = await self.accounts.admit(credential, peer, bucket, route)
        connection.state.key_id = admission.key_id
        return admission


def get_gateway(request: Request) -> Gateway:
    """FastAPI dependency: the app's Gateway."""
    gateway: Gateway = request.app.state.gateway
    return gateway
