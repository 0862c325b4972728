"""One structured log line per HTTP request, written when the response is complete."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from earshot.api.metrics import Metrics

log = logging.getLogger("earshot.access")


class AccessLogMiddleware:
    """Logs method, route, status, duration, model and audio seconds; never headers or bodies."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = uuid.uuid4().hex[:16]
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            failed = True
            raise
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(template, str(status)).inc()
            log.info(
                "request id=%s method=%s route=%s status=%d duration_ms=%.1f model=%s audio_s=%.3f "
                "key=%s outcome=%s",
                request_id,
                scope["method"],
                template if route is not None else scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
                state.get("model", "-"),
                state.get("audio_seconds", 0.0),
                state.get("key_id") or "-",
                state.get("outcome") or ("error" if failed else "ok" if status < 400 else "rejected"),
            )
