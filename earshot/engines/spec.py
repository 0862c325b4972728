"""A catalog entry as the engines read it: which engine serves a model, with which options and limits."""

from __future__ import annotations

import os
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Capability = Literal["transcribe", "stream", "realtime"]
# Engines built into the router, and those in `earshot.engines.<name>` imported only when a catalog uses them.
EMBEDDED_ENGINES = ("pocketsphinx", "null")
PLUGGED_ENGINES = (
    "faster_whisper",
    "vosk",
    "openai",
    "azure_openai",
    "openai_compatible",
    "deepgram",
    "sarvam",
    "whisperlivekit",
)
KNOWN_ENGINES = EMBEDDED_ENGINES + PLUGGED_ENGINES
# Engines that decode on this server's own workers: their one-shot concurrency defaults to the worker count.
WORKER_ENGINES = ("pocketsphinx", "faster_whisper", "vosk")

OptionsT = TypeVar("OptionsT", bound=BaseModel)


class CatalogError(Exception):
    """The catalog file is missing, unreadable or inconsistent."""


class ModelSpec(BaseModel):
    """One servable model: the engine that runs it and the engine's options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: str
    options: dict[str, Any] = Field(default_factory=dict, description="Engine-specific settings")
    capabilities: tuple[Capability, ...] = ("transcribe", "stream", "realtime")
    owned_by: str = "earshot"
    description: str = ""
    price: float = Field(default=0.0, ge=0, description="Cost per unit of audio")
    unit: Literal["second", "minute"] = Field(default="second", description="minute rounds up per request")
    # Providers: where the upstream is and how to reach it. Credentials only by environment variable name.
    upstream_model: str | None = Field(default=None, description="The provider's own model name")
    base_url: str | None = Field(default=None, description="Provider base URL (engines have defaults)")
    api_key_env: str | None = Field(default=None, description="Environment variable with the key")
    timeout_s: float = Field(default=60.0, gt=0, description="Longest wait for one upstream reply")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Longest wait to connect upstream")
    # Routing: a bounded queue in front of a bounded number of concurrent upstream calls, a circuit breaker,
    # and the models tried next when this one fails transiently.
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Concurrent one-shot calls; unset: the workers (local), no bound (providers)",
    )
    max_queue: int = Field(default=64, ge=0, description="Requests waiting for a slot before 503 server_busy")
    max_queue_wait_s: float = Field(
        default=30.0, gt=0, le=3600, description="Longest a request waits for a slot before 503 server_busy"
    )
    max_live_sessions: int | None = Field(
        default=None, ge=0, description="Live sessions at once per server process; unset: measured at start"
    )
    circuit_failures: int = Field(default=5, ge=1, description="Consecutive failures that open the breaker")
    circuit_reset_s: float = Field(default=30.0, gt=0, description="Seconds open before one trial request")
    fallbacks: tuple[str, ...] = Field(default=(), description="Models tried in order on transient failure")

    @model_validator(mode="after")
    def _known_engine(self) -> ModelSpec:
        if self.engine not in KNOWN_ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; known: {', '.join(KNOWN_ENGINES)}")
        return self

    def parsed_options(self, model_id: str, shape: type[OptionsT]) -> OptionsT:
        """The engine options checked against `shape`; a CatalogError listing every problem on one line."""
        try:
            return shape.model_validate(self.options)
        except ValidationError as e:
            problems = "; ".join(
                f"options.{'.'.join(str(part) for part in detail['loc'])}: {detail['msg']}"
                for detail in e.errors()
            )
            raise CatalogError(f"model {model_id!r} ({self.engine}): {problems}") from None

    def api_key(self, model_id: str) -> str:
        """The upstream key, read from the environment variable the catalog names."""
        if not self.api_key_env:
            raise CatalogError(f"model {model_id!r} ({self.engine}) needs api_key_env (a variable name)")
        value = os.environ.get(self.api_key_env)
        if not value:
            raise CatalogError(f"model {model_id!r}: environment variable {self.api_key_env} is not set")
        return value
