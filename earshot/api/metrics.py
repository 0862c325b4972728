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
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from earshot.routing.router import Router

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

    def watch_models(self, models: Router) -> None:
        """Report each model's capacity, load, queue and refusals, read at every scrape."""
        self.registry.register(ModelLoad(models))


class ModelLoad(Collector):
    """Per model: live capacity and sessions held, one-shot calls running and queued, and refusals."""

    def __init__(self, models: Router) -> None:
        self._models = models

    def collect(self) -> list[Metric]:
        live_capacity = GaugeMetricFamily(
            "earshot_model_live_capacity",
            "Live sessions a model can carry at once (-1: unbounded)",
            labels=["model"],
        )
        live_sessions = GaugeMetricFamily(
            "earshot_model_live_sessions", "Live sessions holding a place on a model", labels=["model"]
        )
        running = GaugeMetricFamily(
            "earshot_model_requests_running", "One-shot calls a model is carrying out", labels=["model"]
        )
        queued = GaugeMetricFamily(
            "earshot_model_queue_length", "One-shot calls waiting for a model's slot", labels=["model"]
        )
        refusals = CounterMetricFamily(
            "earshot_model_refusals", "Work refused because a model was full", labels=["model", "kind"]
        )
        for model_id, capacity in self._models.live.items():
            limit = capacity.limit
            live_capacity.add_metric([model_id], -1 if limit is None else limit)
            live_sessions.add_metric([model_id], capacity.held)
            refusals.add_metric([model_id, "live"], capacity.refused)
        for model_id, gate in self._models.gates.items():
            running.add_metric([model_id], gate.active)
            queued.add_metric([model_id], gate.waiting)
            refusals.add_metric([model_id, "one_shot"], gate.refused)
        return [live_capacity, live_sessions, running, queued, refusals]


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    registry: CollectorRegistry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
