"""Azure OpenAI speech-to-text: deployment URLs with `api-version` and the `api-key` header; Realtime too."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from earshot.engines.openai_wire import (
    OpenAIWireEngine,
    RestTarget,
    option_str,
    realtime_dialect,
    wire_engine,
)
from earshot.engines.provider_io import websocket_url
from earshot.engines.realtime_upstream import RealtimeTarget
from earshot.engines.spec import CatalogError, ModelSpec
from earshot.engines.workers import WorkerPool

PROVIDER = "azure_openai"
DEFAULT_API_VERSION = "2024-06-01"
DEFAULT_REALTIME_API_VERSION = "2025-04-01-preview"


def build(model_id: str, spec: ModelSpec, pool: WorkerPool) -> OpenAIWireEngine:
    """An engine for one catalog model served by an Azure OpenAI deployment."""
    if not spec.base_url:
        raise CatalogError(
            f"model {model_id!r} (azure_openai) needs base_url: https://<resource>.openai.azure.com"
        )
    base_url = spec.base_url.rstrip("/")
    deployment = option_str(spec, model_id, "deployment") or spec.upstream_model
    if not deployment:
        raise CatalogError(f"model {model_id!r} (azure_openai) needs options.deployment or upstream_model")
    api_version = option_str(spec, model_id, "api_version", DEFAULT_API_VERSION)
    realtime_version = option_str(spec, model_id, "realtime_api_version", DEFAULT_REALTIME_API_VERSION)
    # Azure's transcription socket names a realtime deployment in its URL and the transcribing deployment
    # in the session; both default to the one deployment.
    realtime_deployment = option_str(spec, model_id, "realtime_deployment") or deployment
    dialect = realtime_dialect(spec, model_id, "beta")
    spec.api_key(model_id)

    def rest() -> RestTarget:
        query = urlencode({"api-version": api_version})
        url = f"{base_url}/openai/deployments/{quote(deployment, safe='')}/audio/transcriptions?{query}"
        return RestTarget(url, {"api-key": spec.api_key(model_id)}, None)

    def realtime() -> RealtimeTarget:
        if dialect == "beta":
            query = {"api-version": realtime_version, "deployment": realtime_deployment}
            path = "/openai/realtime"
        else:
            query = {"model": realtime_deployment}
            path = "/openai/v1/realtime"
        url = f"{websocket_url(base_url)}{path}?{urlencode({**query, 'intent': 'transcription'})}"
        return RealtimeTarget(
            provider=PROVIDER,
            url=url,
            headers={"api-key": spec.api_key(model_id)},
            dialect=dialect,
            model=deployment,
            connect_timeout_s=spec.connect_timeout_s,
            timeout_s=spec.timeout_s,
        )

    return wire_engine(model_id, PROVIDER, spec, rest, realtime)
