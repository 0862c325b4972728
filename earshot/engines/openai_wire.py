"""What the OpenAI-family engines share: the `/audio/transcriptions` call, its replies, and the engine class.

`openai`, `azure_openai` and `openai_compatible` differ only in where they send a request and which headers
carry the key (`RestTarget`), and in whether they can stream through a Realtime socket (`RealtimeTarget`).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import httpx

from earshot.audio.pcm import Audio
from earshot.engines.agreement import AgreementStream
from earshot.engines.base import EngineStream, Segment, TranscribeOptions, UpstreamError, base_language
from earshot.engines.pooled_post import PooledPoster, ReplyUnreadable, direct_route
from earshot.engines.provider_io import HttpProviderEngine, wav_bytes

# Re-exported: the `/v1/realtime` relay takes the upstream socket's description from here.
from earshot.engines.realtime_upstream import RealtimeDialect, RealtimeTarget, RealtimeUpstreamStream
from earshot.engines.results import Word
from earshot.engines.spec import CatalogError, ModelSpec
from earshot.engines.upstream import reference, status_error, transport_error

log = logging.getLogger(__name__)

REPLY_FORMATS = ("verbose_json", "json")


@dataclass(frozen=True, slots=True)
class RestTarget:
    """Where a provider's transcription endpoint is and what goes with every request to it."""

    url: str
    headers: dict[str, str]
    # The form's `model` field; None where the URL names the model (Azure deployments).
    model: str | None


def option_str(spec: ModelSpec, model_id: str, name: str, default: str | None = None) -> str | None:
    """A string engine option, or a CatalogError naming the model when it has another type."""
    value = spec.options.get(name, default)
    if value is not None and not isinstance(value, str):
        raise CatalogError(f"model {model_id!r}: option {name} must be a string")
    return value


def reply_format(spec: ModelSpec, model_id: str) -> str:
    """verbose_json (segments and word times) unless the catalog says the upstream model only does json."""
    chosen = option_str(spec, model_id, "response_format", "verbose_json")
    if chosen not in REPLY_FORMATS:
        raise CatalogError(f"model {model_id!r}: response_format must be one of {', '.join(REPLY_FORMATS)}")
    return chosen


def realtime_dialect(spec: ModelSpec, model_id: str, default: RealtimeDialect) -> RealtimeDialect:
    """The Realtime dialect the upstream speaks (option `realtime_dialect`)."""
    chosen = option_str(spec, model_id, "realtime_dialect", default)
    if chosen == "beta":
        return "beta"
    if chosen == "ga":
        return "ga"
    raise CatalogError(f"model {model_id!r}: realtime_dialect must be beta or ga")


def wants_upstream_realtime(spec: ModelSpec, model_id: str) -> bool:
    """Whether live streams use the provider's Realtime socket (option `upstream_realtime`, default on)."""
    chosen = spec.options.get("upstream_realtime", True)
    if not isinstance(chosen, bool):
        raise CatalogError(f"model {model_id!r}: option upstream_realtime must be true or false")
    return chosen


def form_fields(
    target: RestTarget, options: TranscribeOptions, response_format: str
) -> dict[str, str | list[str]]:
    """The multipart fields besides the file, as the OpenAI SDK spells them."""
    fields: dict[str, str | list[str]] = {}
    if target.model is not None:
        fields["model"] = target.model
    fields["response_format"] = response_format
    if response_format == "verbose_json":
        fields["timestamp_granularities[]"] = ["segment", "word"] if options.word_timestamps else ["segment"]
    if options.language:
        fields["language"] = base_language(options.language)
    if options.prompt:
        fields["prompt"] = options.prompt
    if options.temperature is not None:
        fields["temperature"] = f"{options.temperature:g}"
    return fields


def multipart_form(
    fields: dict[str, str | list[str]], file_field: str, file_name: str, file_type: str, file: bytes
) -> tuple[str, bytes]:
    """(content type, body) of a multipart form: the fields (a list is one part per value), then the file."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, values in fields.items():
        for value in [values] if isinstance(values, str) else values:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n')
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{file_name}"\r\n'
        f"Content-Type: {file_type}\r\n\r\n"
    )
    parts.append(head)
    body = b"".join((("".join(parts)).encode(), file, f"\r\n--{boundary}--\r\n".encode()))
    return f"multipart/form-data; boundary={boundary}", body


def segments_of(provider: str, body: Any, duration_s: float) -> list[Segment]:
    """Segments (with their words) from a json or verbose_json reply."""
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        ref = reference()
        log.debug("upstream %s sent an unexpected reply (ref %s): %r", provider, ref, body)
        raise UpstreamError(f"the upstream provider sent an unexpected reply (ref {ref})", transient=True)
    words = [
        Word(str(w["word"]).strip(), float(w["start"]), float(w["end"]))
        for w in body.get("words") or []
        if isinstance(w, dict) and {"word", "start", "end"} <= w.keys()
    ]
    raw_segments = [s for s in body.get("segments") or [] if isinstance(s, dict) and "text" in s]
    if not raw_segments:
        text = body["text"].strip()
        return [Segment(0.0, duration_s, text, tuple(words))] if text else []
    segments = []
    for index, raw in enumerate(raw_segments):
        start, end = float(raw.get("start", 0.0)), float(raw.get("end", duration_s))
        last = index == len(raw_segments) - 1
        mine = tuple(w for w in words if start <= (w.start + w.end) / 2 < end or (last and w.start >= start))
        segments.append(
            Segment(
                start=start,
                end=end,
                text=str(raw["text"]).strip(),
                words=mine,
                avg_logprob=float(raw.get("avg_logprob") or 0.0),
                no_speech_prob=float(raw.get("no_speech_prob") or 0.0),
            )
        )
    return [segment for segment in segments if segment.text]


class OpenAIWireEngine(HttpProviderEngine):
    """An engine that transcribes through an OpenAI-style `/audio/transcriptions` endpoint."""

    # It reads an upload once, as PCM16 for the WAV it sends: one that came as 16 kHz mono PCM16 is passed
    # on as it came, never decoded.
    reads_encoded_audio = True

    def __init__(
        self,
        name: str,
        provider: str,
        spec: ModelSpec,
        rest: Callable[[], RestTarget],
        realtime: Callable[[], RealtimeTarget] | None = None,
        response_format: str = "verbose_json",
        language: str = "en",
    ) -> None:
        # Unlike the other providers, this client honours proxy settings from the environment.
        super().__init__(spec.timeout_s, spec.connect_timeout_s, trust_env=True)
        self.name = name
        self.provider = provider
        # The gateway compares a request's language without its region against this.
        self.language = base_language(language)
        # The provider decides which languages it recognises; a request for one it lacks is its 400.
        self.languages: frozenset[str] | None = None
        self._spec = spec
        self._rest = rest
        self._realtime = realtime
        self._response_format = response_format
        self._target: RestTarget | None = None
        self._poster: PooledPoster | None = None

    async def start(self) -> None:
        """Read the key and open the HTTP clients."""
        self._target = self._rest()
        await super().start()
        if direct_route(self._target.url):
            # No proxy in the way: one-shot calls take the lean pooled client (httpx stays for the rest).
            self._poster = PooledPoster(self._spec.timeout_s, self._spec.connect_timeout_s)

    async def stop(self) -> None:
        """Close the HTTP clients."""
        if self._poster is not None:
            self._poster.close()
            self._poster = None
        await super().stop()

    def realtime_target(self) -> RealtimeTarget | None:
        """The upstream Realtime socket, for engines that stream through one; None otherwise."""
        return self._realtime() if self._realtime is not None else None

    async def transcribe_segments(self, audio: Audio, options: TranscribeOptions) -> AsyncIterator[Segment]:
        """POST the audio as a WAV file and yield the reply's segments."""
        if self._client is None or self._target is None:
            raise UpstreamError("the engine is not started", transient=True)
        target = self._target
        data = form_fields(target, options, self._response_format)
        wav = wav_bytes(audio)
        if self._poster is not None:
            body = await self._post_pooled(self._poster, target, data, wav)
        else:
            body = await self._post_httpx(self._client, target, data, wav)
        for segment in segments_of(self.provider, body, audio.duration_s):
            yield segment

    async def _post_pooled(
        self, poster: PooledPoster, target: RestTarget, data: dict[str, str | list[str]], wav: bytes
    ) -> Any:
        content_type, form = multipart_form(data, "file", "audio.wav", "audio/wav", wav)
        try:
            reply = await poster.post(target.url, target.headers, content_type, form)
        except (OSError, TimeoutError, ReplyUnreadable) as e:
            raise transport_error(self.provider, e) from e
        if reply.status >= 400:
            raise status_error(self.provider, reply.as_httpx())
        try:
            return json.loads(reply.body)
        except ValueError as e:
            raise transport_error(self.provider, e) from e

    async def _post_httpx(
        self, client: httpx.AsyncClient, target: RestTarget, data: dict[str, str | list[str]], wav: bytes
    ) -> Any:
        files = {"file": ("audio.wav", wav, "audio/wav")}
        request = client.build_request("POST", target.url, headers=target.headers, data=data, files=files)
        # One body buffer instead of httpx writing the multipart parts in many small pieces.
        request.read()
        try:
            response = await client.send(request)
        except httpx.TransportError as e:
            raise transport_error(self.provider, e) from e
        if response.status_code >= 400:
            raise status_error(self.provider, response)
        try:
            return response.json()
        except ValueError as e:
            raise transport_error(self.provider, e) from e

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        """The upstream Realtime socket where there is one, else re-decodes made stable by LocalAgreement."""
        if self._realtime is not None:
            return RealtimeUpstreamStream(self._realtime(), options)
        return AgreementStream(self, options)


def wire_engine(
    model_id: str,
    provider: str,
    spec: ModelSpec,
    rest: Callable[[], RestTarget],
    realtime: Callable[[], RealtimeTarget] | None = None,
) -> OpenAIWireEngine:
    """The engine for one catalog model, with the options every OpenAI-family provider reads."""
    return OpenAIWireEngine(
        model_id,
        provider,
        spec,
        rest,
        realtime if realtime is not None and wants_upstream_realtime(spec, model_id) else None,
        response_format=reply_format(spec, model_id),
        language=option_str(spec, model_id, "language", "en") or "en",
    )


@runtime_checkable
class UpstreamRealtime(Protocol):
    """An engine whose live audio can go straight to a provider's Realtime socket (the relay's marker)."""

    def realtime_target(self) -> RealtimeTarget | None:
        """The upstream socket, or None when this engine doesn't stream through one."""
        ...


def upstream_realtime_target(engine: object) -> RealtimeTarget | None:
    """The Realtime socket a `/v1/realtime` session on this engine is relayed to, if any."""
    return engine.realtime_target() if isinstance(engine, UpstreamRealtime) else None
