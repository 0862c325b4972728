"""OpenAI's `/v1/audio/speech`, at OpenAI or any server speaking it (`openai_compatible`), streamed through.

The upstream encodes the audio in the format the caller asked for, so its body is passed on as it arrives.
A failure before the first byte is an UpstreamError (transient ones let the router try a fallback); the
upstream's error body, URL and key go to the DEBUG log only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from earshot.engines.provider_io import HttpProviderEngine
from earshot.engines.spec import CatalogError
from earshot.engines.upstream import status_error, transport_error
from earshot.voice.spec import SynthesisSpec
from earshot.voice.tts import SpeechRequest

OPENAI_BASE_URL = "https://api.openai.com/v1"
# What a refusal's body may hold before the rest is dropped (it is only logged, at DEBUG).
MAX_ERROR_BODY_BYTES = 64 * 1024


class OpenAISpeechSynthesizer(HttpProviderEngine):
    """Speech from an OpenAI-shaped `/audio/speech` endpoint; voices and instructions pass as sent."""

    def __init__(
        self,
        name: str,
        provider: str,
        url: str,
        upstream_model: str,
        headers: Callable[[], dict[str, str]],
        timeout_s: float,
        connect_timeout_s: float,
    ) -> None:
        super().__init__(timeout_s, connect_timeout_s)
        self.name = name
        self.provider = provider
        self.url = url
        self.upstream_model = upstream_model
        self._headers = headers

    async def synthesize(self, request: SpeechRequest) -> AsyncIterator[bytes]:
        """The upstream's audio bytes, as they arrive."""
        body: dict[str, Any] = {
            "model": self.upstream_model,
            "input": request.text,
            "voice": request.voice,
            "response_format": request.response_format.value,
            "speed": request.speed,
        }
        if request.instructions:
            body["instructions"] = request.instructions
        client = self._started_client()
        try:
            async with client.stream("POST", self.url, json=body, headers=self._headers()) as response:
                if response.status_code != 200:
                    raise status_error(self.provider, await _bounded_copy(response))
                async for chunk in response.aiter_bytes():
                    if chunk:
                        yield chunk
        except httpx.HTTPError as e:
            raise transport_error(self.provider, e) from e


async def _bounded_copy(response: httpx.Response) -> httpx.Response:
    """The refusal with at most MAX_ERROR_BODY_BYTES of its body read, for status_error to log."""
    read: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        read.append(chunk)
        size += len(chunk)
        if size >= MAX_ERROR_BODY_BYTES:
            break
    body = b"".join(read)[:MAX_ERROR_BODY_BYTES]
    return httpx.Response(response.status_code, headers=response.headers, content=body)


def build(model_id: str, spec: SynthesisSpec) -> OpenAISpeechSynthesizer:
    """The synthesizer for an `openai` or `openai_compatible` catalog entry."""
    if spec.options:
        raise CatalogError(f"speech model {model_id!r} ({spec.engine}) takes no options")
    if spec.engine == "openai":
        base_url = spec.base_url or OPENAI_BASE_URL
        key_needed = True
    else:
        if not spec.base_url:
            raise CatalogError(
                f"speech model {model_id!r} (openai_compatible) needs base_url, e.g. http://host:8000/v1"
            )
        base_url = spec.base_url
        key_needed = spec.api_key_env is not None
    if key_needed:
        spec.api_key(model_id)  # a missing key stops the server at start, with the variable's name

    def headers() -> dict[str, str]:
        # Read per request, so a rotated key is used without a restart.
        return {"Authorization": f"Bearer {spec.api_key(model_id)}"} if key_needed else {}

    return OpenAISpeechSynthesizer(
        name=model_id,
        provider=spec.engine,
        url=f"{base_url.rstrip('/')}/audio/speech",
        upstream_model=spec.upstream_model or model_id,
        headers=headers,
        timeout_s=spec.timeout_s,
        connect_timeout_s=spec.connect_timeout_s,
    )
