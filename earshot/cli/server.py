"""The uvicorn server `earshot serve` runs: on shutdown, live sessions are drained before sockets are cut."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import threading
from multiprocessing.connection import wait

import uvicorn
from fastapi import FastAPI

from earshot.api.context import Gateway
from earshot.cli.http_protocol import with_header_timeout
from earshot.settings import Settings


def server_config(settings: Settings, app: FastAPI) -> uvicorn.Config:
    """uvicorn's settings for serving `app` as `earshot serve` does."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        ws_max_size=settings.ws_max_message_bytes,
        # Dead peers are found by pings on every WebSocket (a quiet /v1/realtime session is kept open).
        ws_ping_interval=settings.ws_ping_interval_s or None,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
        http=with_header_timeout(settings.header_timeout_s),
        # The client address (per-IP limits, logs) comes from X-Forwarded-For only from a trusted proxy.
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
    )


def configure_logging(settings: Settings) -> None:
    """earshot's log lines on stderr; with several workers each line names the process that wrote it."""
    worker = " [%(process)d]" if (settings.workers or 1) > 1 else ""
    logging.basicConfig(
        level=settings.log_level.upper(), format=f"%(asctime)s %(levelname)s{worker} %(name)s %(message)s"
    )


def serve_worker(settings: Settings, sockets: list[socket.socket] | None) -> None:
    """Serve one gateway process: on the supervisor's bound `sockets`, or (None) binding host:port itself."""
    # Imported here: the supervisor itself never builds an app.
    from earshot.app import create_app

    configure_logging(settings)
    if sockets is not None:
        threading.Thread(target=_stop_when_orphaned, name="earshot-orphan-watch", daemon=True).start()
    app = create_app(settings)
    DrainingServer(server_config(settings, app), app).run(sockets=sockets)


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


def _stop_when_orphaned() -> None:
    """Drain and exit (as on SIGTERM) if the supervisor dies without stopping this worker first."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)
