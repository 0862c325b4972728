"""The chat client: a chat model's fallback chain over OpenAI-compatible `/chat/completions`, streamed.

Each chat model is a provider behind its own circuit breaker and concurrency gate (the speech providers'
`routing/breaker.py` and `routing/gate.py`). A call goes to the model's own provider first, then to its
fallbacks, moving on after a transient failure (connect error, timeout, 429, 5xx, a stream cut short) as long
as nothing has reached the caller yet. Upstream error bodies, URLs and keys stay in DEBUG logs
(`engines/upstream.py`); the caller sees a generic `UpstreamError`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from earshot.engines.base import UpstreamError
from earshot.engines.upstream import reference, status_error, transport_error
from earshot.routing.breaker import CircuitBreaker
from earshot.routing.catalog import Catalog, CatalogError, ChatModelSpec
from earshot.routing.chain import first_to_answer
from earshot.routing.gate import ConcurrencyGate
from earshot.routing.provider import breaker_refusal
from earshot.voice.chat_wire import (
    ChatEvent,
    ChatStreamDecoder,
    ChatWireError,
    TextDelta,
    ToolCall,
    request_body,
)

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
AZURE_API_VERSION = "2024-10-21"


@dataclass(frozen=True, slots=True)
class ChatTarget:
    """Where one chat model's calls go: the URL, the headers (with the key) and the body's model name."""

    url: str
    headers: dict[str, str]
    model: str | None


def _api_key(model_id: str, spec: ChatModelSpec, required: bool) -> str | None:
    if not spec.api_key_env:
        if required:
            raise CatalogError(f"chat model {model_id!r} ({spec.engine}) needs api_key_env (a variable name)")
        return None
    value = os.environ.get(spec.api_key_env)
    if not value:
        raise CatalogError(f"chat model {model_id!r}: environment variable {spec.api_key_env} is not set")
    return value


def chat_target(model_id: str, spec: ChatModelSpec) -> ChatTarget:
    """The upstream of a catalog chat model; CatalogError for a missing key or deployment."""
    if spec.engine == "azure_openai":
        assert spec.base_url is not None
        deployment = str(spec.options.get("deployment") or spec.upstream_model or "")
        if not deployment:
            raise CatalogError(
                f"chat model {model_id!r} (azure_openai) needs upstream_model (the deployment)"
            )
        version = str(spec.options.get("api_version") or AZURE_API_VERSION)
        url = (
            f"{spec.base_url.rstrip('/')}/openai/deployments/{quote(deployment, safe='')}/chat/completions"
            f"?{urlencode({'api-version': version})}"
        )
        key = _api_key(model_id, spec, required=True)
        assert key is not None
        return ChatTarget(url, {"api-key": key}, None)
    base_url = (spec.base_url or OPENAI_BASE_URL).rstrip("/")
    key = _api_key(model_id, spec, required=spec.engine == "openai")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return ChatTarget(f"{base_url}/chat/completions", headers, spec.upstream_model or model_id)


def check_chat_models(catalog: Catalog) -> None:
    """Resolve every chat model's upstream once: a missing key or deployment is a one-line error at start."""
    for model_id, spec in catalog.chat_models.items():
        chat_target(model_id, spec)


@dataclass(slots=True)
class ChatProvider:
    """One chat model's upstream behind its breaker and gate."""

    model_id: str
    spec: ChatModelSpec
    target: ChatTarget
    breaker: CircuitBreaker
    gate: ConcurrencyGate


class ChatClient:
    """A chat model's chain: its own provider, then its fallbacks."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        providers: list[ChatProvider],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http = http
        self.providers = providers
        self.clock = clock
        self.model_id = providers[0].model_id

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ChatEvent]:
        """The events of one completion, from the first provider that answers; raises the last failure."""

        def refusal(provider: ChatProvider, now: float) -> UpstreamError:
            return breaker_refusal(f"chat model {provider.model_id!r}", provider.breaker, now)

        def log_fallback(index: int, error: UpstreamError) -> None:
            log.warning(
                "chat model %s failed (%s); trying the next, if any", self.providers[index].model_id, error
            )

        async for event in first_to_answer(
            self.providers,
            lambda provider: self._call(provider, messages, tools),
            self.clock,
            refusal,
            log_fallback,
            reaches_caller=lambda event: isinstance(event, TextDelta | ToolCall),
        ):
            yield event

    async def _call(
        self, provider: ChatProvider, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ChatEvent]:
        name = f"chat:{provider.model_id}"
        target = provider.target
        body = request_body(target.model, messages, tools)
        timeout = httpx.Timeout(provider.spec.timeout_s, connect=provider.spec.connect_timeout_s)
        decoder = ChatStreamDecoder()
        try:
            async with self.http.stream(
                "POST", target.url, json=body, headers=target.headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise status_error(name, response)
                async for line in response.aiter_lines():
                    for event in decoder.feed_line(line):
                        yield event
                    if decoder.done:
                        break
        except httpx.TransportError as e:
            raise transport_error(name, e) from e
        except ChatWireError as e:
            ref = reference()
            log.debug("upstream %s sent a malformed stream (ref %s): %s", name, ref, e)
            raise UpstreamError(
                f"the upstream chat model sent a malformed reply (ref {ref})", transient=True
            ) from e
        if not decoder.finished:
            ref = reference()
            log.debug("upstream %s ended its stream before the choice finished (ref %s)", name, ref)
            raise UpstreamError(
                f"the upstream chat model stopped mid-reply (ref {ref})", transient=True, status=502
            )


@dataclass(frozen=True, slots=True)
class ChatRoute:
    """The chat model a turn resolved to and its client."""

    model_id: str
    client: ChatClient


class ChatModels:
    """Every catalog chat model's client, sharing one HTTP connection pool."""

    def __init__(self, catalog: Catalog, http: httpx.AsyncClient | None = None) -> None:
        self.catalog = catalog
        self.http = http or httpx.AsyncClient()
        providers = {
            model_id: ChatProvider(
                model_id,
                spec,
                chat_target(model_id, spec),
                CircuitBreaker(spec.circuit_failures, spec.circuit_reset_s),
                ConcurrencyGate(model_id, spec.max_concurrency, spec.max_queue, spec.max_queue_wait_s),
            )
            for model_id, spec in catalog.chat_models.items()
        }
        self.clients = {
            model_id: ChatClient(self.http, [providers[m] for m in (model_id, *spec.fallbacks)])
            for model_id, spec in catalog.chat_models.items()
        }

    def route(self, model_id: str | None) -> ChatRoute:
        """The chat model asked for, or the default one; ChatModelNotFound when there is none."""
        chosen = self.catalog.resolve_chat(model_id)
        return ChatRoute(chosen, self.clients[chosen])

    async def aclose(self) -> None:
        await self.http.aclose()
