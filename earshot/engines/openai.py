"""OpenAI's speech-to-text: REST `/v1/audio/transcriptions`, and streaming through the Realtime socket."""

from __future__ import annotations

from earshot.engines.openai_wire import (
    OpenAIWireEngine,
    RestTarget,
    realtime_dialect,
    wire_engine,
)
from earshot.engines.provider_io import websocket_url
from earshot.engines.realtime_upstream import RealtimeTarget
from earshot.engines.spec import ModelSpec
from earshot.engines.workers import WorkerPool

PROVIDER = "openai"
DEFAULT_BASE_URL = "https://api.openai.com/v1"


def build(model_id: str, spec: ModelSpec, pool: WorkerPool) -> OpenAIWireEngine:
    """An engine for one catalog model served by OpenAI (or anything at `base_url` speaking its API)."""
    base_url = (spec.base_url or DEFAULT_BASE_URL).rstrip("/")
    upstream_model = spec.upstream_model or model_id
    dialect = realtime_dialect(spec, model_id, "ga")
    spec.api_key(model_id)  # a missing key stops the server at start, with the variable's name

    def rest() -> RestTarget:
        headers = {"Authorization": f"Bearer {spec.api_key(model_id)}"}
        return RestTarget(f"{base_url}/audio/transcriptions", headers, upstream_model)

    def realtime() -> RealtimeTarget:
        headers = {"Authorization": f"Bearer {spec.api_key(model_id)}"}
        if dialect == "beta":
            headers["OpenAI-Beta"] = "realtime=v1"
        return RealtimeTarget(
            provider=PROVIDER,
            url=f"{websocket_url(base_url)}/realtime?intent=transcription",
            headers=headers,
            dialect=dialect,
            model=upstream_model,
            connect_timeout_s=spec.connect_timeout_s,
            timeout_s=spec.timeout_s,
        )

    return wire_engine(model_id, PROVIDER, spec, rest, realtime)
