"""Deepgram: prerecorded REST (`POST /v1/listen`) for one-shot audio, the live WebSocket for streams.

Catalog `options` are Deepgram query parameters (`smart_format`, `punctuate`, `endpointing`, `keyterm`,
...), except the engine's own settings (`language`, `keepalive_s`, `finalize_timeout_s`). The key goes in
`Authorization: Token KEY`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx

from earshot.audio.pcm import Audio
from earshot.engines.base import Segment, TranscribeOptions, base_language
from earshot.engines.deepgram_live import DeepgramStream
from earshot.engines.deepgram_wire import PROVIDER, DeepgramConfig, segments_of
from earshot.engines.provider_io import HttpProviderEngine, unreadable_reply, wav_bytes
from earshot.engines.spec import ModelSpec
from earshot.engines.upstream import status_error, transport_error
from earshot.engines.workers import WorkerPool


class DeepgramEngine(HttpProviderEngine):
    """Deepgram's hosted models: one-shot by prerecorded REST, streams over the live WebSocket."""

    def __init__(self, config: DeepgramConfig, name: str = "deepgram") -> None:
        super().__init__(config.timeout_s, config.connect_timeout_s)
        self.name = name
        # The gateway compares a caller's ISO 639-1 code with this; Deepgram's own may carry a region.
        self.language = base_language(config.language)
        # Deepgram decides which languages a model recognises; a request for one it lacks is its 400.
        self.languages: frozenset[str] | None = None
        self.config = config

    async def transcribe_segments(self, audio: Audio, options: TranscribeOptions) -> AsyncIterator[Segment]:
        """Send the whole buffer to prerecorded `/v1/listen`; yield its utterances in order."""
        client = self._started_client()
        params = urlencode(self.config.params(options, utterances="true"))
        headers = {**self.config.headers, "Content-Type": "audio/wav"}
        try:
            response = await client.post(
                f"{self.config.base_url}/v1/listen", params=params, headers=headers, content=wav_bytes(audio)
            )
        except httpx.TransportError as e:
            raise transport_error(PROVIDER, e) from e
        if response.status_code >= 300:
            raise status_error(PROVIDER, response)
        try:
            segments = segments_of(response.json())
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise unreadable_reply(PROVIDER, response.text) from e
        for segment in segments:
            yield segment

    def open_stream(self, options: TranscribeOptions) -> DeepgramStream:
        """A live stream; the socket opens with the first audio."""
        return DeepgramStream(self.config, options)


def build(model_id: str, spec: ModelSpec, pool: WorkerPool) -> DeepgramEngine:
    """The engine for one catalog entry (`engine: deepgram`)."""
    return DeepgramEngine(DeepgramConfig.from_spec(model_id, spec), name=model_id)
