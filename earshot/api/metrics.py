"""Prometheus metrics: requests, live sessions, audio seconds, sessions in progress, engine latency."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

router = APIRouter()


class Metrics:
    """One server's metrics, in a registry of its own (so apps built in one process don't collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "earshot_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.audio_seconds = Counter(
            "earshot_audio_seconds", "Seconds of audio metered, by model", ["model"], registry=self.registry
        )
        self.active_sessions = Gauge(
            "earshot_active_sessions",
            "Admitted requests and live sessions in progress",
            registry=self.registry,
        )
        self.live_sessions = Counter(
            "earshot_live_sessions",
            "Live sessions ended, by route and usage outcome",
            ["route", "outcome"],
            registry=self.registry,
        )
        self.engine_latency = Histogram(
            "earshot_engine_latency_seconds",
            "Time the engine took per request, by model",
            ["model"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    registry: CollectorRegistry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
