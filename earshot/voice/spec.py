"""A `speech_models` catalog entry: which synthesis engine speaks for a model, and how to reach it."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from earshot.engines.spec import CatalogError

SynthesisEngine = Literal["espeak", "openai", "openai_compatible"]
# What `GET /v1/models` lists for a synthesis model: it serves `POST /v1/audio/speech`.
SPEECH_CAPABILITY = "speech"


class SynthesisSpec(BaseModel):
    """One synthesis model: its engine, the engine's options, its price per character and its routing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: SynthesisEngine
    options: dict[str, Any] = Field(default_factory=dict, description="Engine-specific settings")
    owned_by: str = "earshot"
    description: str = ""
    price: float = Field(default=0.0, ge=0, description="Cost per character of input text")
    unit: Literal["character"] = "character"
    upstream_model: str | None = Field(default=None, description="The provider's own model name")
    base_url: str | None = Field(default=None, description="Provider base URL (openai has a default)")
    api_key_env: str | None = Field(default=None, description="Environment variable with the key")
    timeout_s: float = Field(default=60.0, gt=0, description="Longest wait for the upstream's next bytes")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Longest wait to connect upstream")
    max_concurrency: int | None = Field(
        default=None, ge=1, description="Syntheses at once; unset: 4 (espeak), no bound (providers)"
    )
    max_queue: int = Field(default=64, ge=0, description="Requests waiting for a slot before 503 server_busy")
    max_queue_wait_s: float = Field(
        default=30.0, gt=0, le=3600, description="Longest a request waits for a slot before 503 server_busy"
    )
    circuit_failures: int = Field(default=5, ge=1, description="Consecutive failures that open the breaker")
    circuit_reset_s: float = Field(default=30.0, gt=0, description="Seconds open before one trial request")
    fallbacks: tuple[str, ...] = Field(default=(), description="Speech models tried in order on failure")

    def api_key(self, model_id: str) -> str:
        """The upstream key, read from the environment variable the catalog names."""
        if not self.api_key_env:
            raise CatalogError(
                f"speech model {model_id!r} ({self.engine}) needs api_key_env (a variable name)"
            )
        value = os.environ.get(self.api_key_env)
        if not value:
            raise CatalogError(
                f"speech model {model_id!r}: environment variable {self.api_key_env} is not set"
            )
        return value
