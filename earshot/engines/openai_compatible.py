"""Any server speaking OpenAI's `/audio/transcriptions` at a configured base URL (vLLM, speaches, LocalAI...).

Streaming re-decodes the growing buffer through LocalAgreement-2, since such servers rarely offer Realtime.
"""

from __future__ import annotations

from earshot.engines.openai_wire import OpenAIWireEngine, RestTarget, wire_engine
from earshot.engines.spec import CatalogError, ModelSpec
from earshot.engines.workers import WorkerPool

PROVIDER = "openai_compatible"


def build(model_id: str, spec: ModelSpec, pool: WorkerPool) -> OpenAIWireEngine:
    """An engine for one catalog model served at `base_url` (e.g. http://host:8000/v1)."""
    if not spec.base_url:
        raise CatalogError(f"model {model_id!r} (openai_compatible) needs base_url, e.g. http://host:8000/v1")
    base_url = spec.base_url.rstrip("/")
    upstream_model = spec.upstream_model or model_id
    if spec.api_key_env:
        spec.api_key(model_id)

    def rest() -> RestTarget:
        # Local servers often need no key: api_key_env is optional here.
        headers = {"Authorization": f"Bearer {spec.api_key(model_id)}"} if spec.api_key_env else {}
        return RestTarget(f"{base_url}/audio/transcriptions", headers, upstream_model)

    return wire_engine(model_id, PROVIDER, spec, rest)
