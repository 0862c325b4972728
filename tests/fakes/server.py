"""Run a fake provider's ASGI app on a real uvicorn server on a free port, in a background thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from tests.conftest import free_port


class FakeServer:
    """A uvicorn server for one ASGI app, on 127.0.0.1 at a free port, in its own thread and event loop."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._server.serve()), daemon=True)

    def start(self) -> FakeServer:
        """Start serving and wait until the socket listens."""
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)


@contextmanager
def serving(app: Any) -> Iterator[FakeServer]:
    """A started FakeServer for `app`, stopped on exit."""
    server = FakeServer(app).start()
    try:
        yield server
    finally:
        server.stop()
