"""OpenAI REST: POST /v1/audio/transcriptions (json, text, srt, vtt, verbose_json, SSE) and /v1/models."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from earshot.api.admission import Admission
from earshot.api.context import Gateway, get_gateway
from earshot.api.metrics import Metrics
from earshot.api.openai.errors import OpenAIError, invalid_form_field
from earshot.api.openai.formats import ResponseFormat, render
from earshot.api.uploads import (
    BadUpload,
    BodyPace,
    UploadedForm,
    UploadTooLarge,
    UploadTooSlow,
    body_pace,
    decode_upload,
    read_body,
    read_multipart,
)
from earshot.audio.decode import AudioDecodeError, AudioTooLong, EmptyAudio
from earshot.audio.pcm import Audio
from earshot.engines.base import EngineError, TranscribeOptions, supports_language
from earshot.routing.catalog import VOICE_AGENT_CAPABILITY, ModelNotFound
from earshot.routing.gate import ServerBusy
from earshot.routing.router import Route
from earshot.store.records import KeyRecord, Outcome
from earshot.voice.spec import SPEECH_CAPABILITY

log = logging.getLogger(__name__)
router = APIRouter()
GatewayDep = Annotated[Gateway, Depends(get_gateway)]


class TranscriptionParams(BaseModel):
    """The form fields of a transcription request, other than the file."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    language: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})?$")
    prompt: str | None = None
    response_format: ResponseFormat = ResponseFormat.JSON
    temperature: float = Field(default=0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Literal["word", "segment"]] = Field(default_factory=list)
    stream: bool = False
    include: list[str] = Field(default_factory=list)

    @field_validator("model", "language", "prompt", mode="before")
    @classmethod
    def _blank_is_absent(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @classmethod
    def from_form(cls, form: UploadedForm) -> TranscriptionParams:
        """Validate the form's fields, accepting list fields with and without the `[]` suffix."""
        raw: dict[str, Any] = {
            name: form.first(name)
            for name in ("model", "language", "prompt", "response_format", "temperature", "stream")
            if form.first(name) is not None
        }
        raw["timestamp_granularities"] = form.all("timestamp_granularities[]", "timestamp_granularities")
        raw["include"] = form.all("include[]", "include")
        try:
            params = cls.model_validate(raw)
        except ValidationError as e:
            raise invalid_form_field(e) from e
        if params.timestamp_granularities and params.response_format is not ResponseFormat.VERBOSE_JSON:
            raise OpenAIError(
                400,
                "timestamp_granularities requires response_format=verbose_json",
                code="invalid_value",
                param="timestamp_granularities",
            )
        if params.stream and params.response_format not in (ResponseFormat.JSON, ResponseFormat.TEXT):
            raise OpenAIError(
                400, "stream=true supports response_format json or text", code="invalid_value", param="stream"
            )
        return params


@router.post("/v1/audio/transcriptions", response_model=None)
async def create_transcription(request: Request, gateway: GatewayDep) -> Response:
    """Transcribe an uploaded audio file."""
    admission = await gateway.admit(request, bucket="transcribe", route="openai.transcriptions")
    async with admission:
        return await _transcribe(request, gateway, admission)


async def _transcribe(request: Request, gateway: Gateway, admission: Admission) -> Response:
    form = await read_form(request, gateway.accounts.dials.current.max_upload_bytes, body_pace(gateway))
    params = TranscriptionParams.from_form(form)
    route = _route(gateway, params.model)
    request.state.model = route.model_id
    admission.use_model(
        params.model or route.model_id, route, gateway.router.catalog.names_of(route.model_id)
    )
    needed = "stream" if params.stream else "transcribe"
    if needed not in route.spec.capabilities:
        raise OpenAIError(
            400, f"model {route.model_id!r} does not offer {needed}", code="unsupported_model", param="model"
        )
    require_language(route, params.language, params.model or route.model_id)
    audio = await decode_form_audio(form, gateway)
    request.state.audio_seconds = audio.duration_s
    await admission.reserve(round(audio.duration_s * 1000))
    options = TranscribeOptions(
        language=params.language,
        prompt=params.prompt,
        temperature=params.temperature,
        word_timestamps="word" in params.timestamp_granularities,
    )
    if params.stream:
        admission.hand_off()
        events = _sse_events(route, audio, options, request, admission, gateway.metrics)
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            # A proxy (nginx) passes each event on as it comes instead of buffering the response.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        transcript = await gateway.transcribe(route, audio, options)
    except (EngineError, ServerBusy) as e:
        raise OpenAIError.from_engine(e) from e
    body, media_type = render(
        transcript,
        params.response_format,
        audio.duration_s,
        granularities=set(params.timestamp_granularities),
    )
    if isinstance(body, dict):
        return JSONResponse(body)
    return PlainTextResponse(body, media_type=media_type)


def require_language(route: Route, language: str | None, model_name: str) -> None:
    """The 400 for a `language` the route's engine does not know, naming the model as `model_name`."""
    if language and not supports_language(route.engine, language):
        raise OpenAIError(
            400,
            f"model {model_name} does not support language {language!r}",
            code="unsupported_language",
            param="language",
        )


async def read_json_body(request: Request, limit_bytes: int, pace: BodyPace) -> bytes:
    """A request's raw (JSON) body, its refusals in OpenAI's shape (413, 408)."""
    try:
        return await read_body(request, limit_bytes, pace)
    except UploadTooLarge as e:
        raise OpenAIError(413, str(e), code="request_too_large") from e
    except UploadTooSlow as e:
        raise OpenAIError(408, str(e), code="request_timeout", type_="invalid_request_error") from e


async def read_form(request: Request, limit_bytes: int, pace: BodyPace) -> UploadedForm:
    """A multipart upload with a non-empty `file`, its refusals in OpenAI's shape (413, 408, 400)."""
    try:
        form = await read_multipart(request, limit_bytes, pace)
    except UploadTooLarge as e:
        raise OpenAIError(413, str(e), code="request_too_large") from e
    except UploadTooSlow as e:
        raise OpenAIError(408, str(e), code="request_timeout", type_="invalid_request_error") from e
    except BadUpload as e:
        raise OpenAIError(400, str(e), code="invalid_request") from e
    if form.file is None:
        raise OpenAIError(
            400, "missing required parameter: file", code="missing_required_parameter", param="file"
        )
    if not form.file:
        raise OpenAIError(400, "the uploaded file is empty", code="empty_file", param="file")
    return form


def _route(gateway: Gateway, model_id: str | None) -> Route:
    try:
        return gateway.router.route(model_id)
    except ModelNotFound as e:
        raise OpenAIError(
            404, f"the model {model_id!r} does not exist", code="model_not_found", param="model"
        ) from e


async def decode_form_audio(form: UploadedForm, gateway: Gateway) -> Audio:
    """The form's file decoded (kept encoded) within the audio length limit; refusals in OpenAI's shape."""
    assert form.file is not None
    limit_s = gateway.settings.max_audio_seconds
    try:
        return await decode_upload(form.file, form.file_content_type, limit_s, gateway.decode_limiter)
    except AudioTooLong as e:
        raise OpenAIError(
            400, f"audio is longer than the {limit_s:g} s limit", code="audio_too_long", param="file"
        ) from e
    except EmptyAudio as e:
        raise OpenAIError(400, "the file contains no audio", code="empty_file", param="file") from e
    except AudioDecodeError as e:
        raise OpenAIError(400, str(e), code="invalid_audio", param="file") from e


def _sse(event: dict[str, Any]) -> str:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


def _sse_error(error: OpenAIError) -> str:
    return _sse({"type": "error", **error.body()})


async def _sse_events(
    route: Route,
    audio: Audio,
    options: TranscribeOptions,
    request: Request,
    admission: Admission,
    metrics: Metrics,
) -> AsyncIterator[str]:
    """Deltas as the engine finishes each segment, then the whole text with usage; metered once."""
    outcome: Outcome = "client_closed"
    started = time.perf_counter()
    try:
        async for event in _sse_transcript(route, audio, options, request):
            yield event
        failure = getattr(request.state, "outcome", None)
        outcome = ("upstream_error" if failure == "upstream_error" else "error") if failure else "ok"
        if outcome == "ok":
            metrics.engine_latency.labels(route.model_id).observe(time.perf_counter() - started)
    finally:
        await admission.finish(outcome)


async def _sse_transcript(
    route: Route, audio: Audio, options: TranscribeOptions, request: Request
) -> AsyncIterator[str]:
    texts: list[str] = []
    try:
        async for segment in route.engine.transcribe_segments(audio, options):
            delta = segment.text if not texts else " " + segment.text
            texts.append(segment.text)
            yield _sse({"type": "transcript.text.delta", "delta": delta})
    except (EngineError, ServerBusy) as e:
        log.error("model %s failed mid-stream: %s", route.model_id, e)
        error = OpenAIError.from_engine(e)
        request.state.outcome = error.code
        yield _sse_error(error)
        return
    except Exception:
        # The response has started, so the failure can only be told as an SSE error event.
        incident = uuid.uuid4().hex[:12]
        log.exception("transcription stream failed incident=%s model=%s", incident, route.model_id)
        request.state.outcome = "error"
        yield _sse_error(
            OpenAIError(500, f"internal server error (incident {incident})", code="internal_error")
        )
        return
    usage = {"type": "duration", "seconds": round(audio.duration_s, 3)}
    yield _sse({"type": "transcript.text.done", "text": " ".join(texts), "usage": usage})


class ModelCard(BaseModel):
    """OpenAI's model object, with the capabilities earshot serves it with."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    capabilities: list[str]
    # Set for a name that stands for another model (OpenAI's names, the catalog's aliases): that model's id.
    alias_of: str | None = None


@router.get("/v1/models")
async def list_models(request: Request, gateway: GatewayDep) -> dict[str, Any]:
    """Every model id and alias this server accepts from the caller's key."""
    key = await gateway.identify(request)
    catalog = gateway.router.catalog
    cards = [
        _card(gateway, model_id).model_dump()
        for model_id in catalog.public_ids()
        if _allowed(key, catalog.names_of(catalog.resolve(model_id)))
    ]
    cards += [
        _speech_card(gateway, model_id).model_dump()
        for model_id in catalog.public_speech_ids()
        if _allowed(key, catalog.speech_names_of(catalog.resolve_speech(model_id)))
    ]
    cards += [
        _chat_card(gateway, model_id).model_dump()
        for model_id in catalog.chat_models
        if _allowed(key, {model_id})
    ]
    cards += [
        _voice_agent_card(gateway, agent_id).model_dump()
        for agent_id in catalog.voice_agents
        if _allowed(key, {agent_id})
    ]
    return {"object": "list", "data": cards}


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, request: Request, gateway: GatewayDep) -> dict[str, Any]:
    """One model by id or alias."""
    key = await gateway.identify(request)
    catalog = gateway.router.catalog
    not_found = OpenAIError(404, f"the model {model_id!r} does not exist", code="model_not_found")
    if model_id in catalog.chat_models:
        if not _allowed(key, {model_id}):
            raise not_found
        return _chat_card(gateway, model_id).model_dump()
    if model_id in catalog.voice_agents:
        if not _allowed(key, {model_id}):
            raise not_found
        return _voice_agent_card(gateway, model_id).model_dump()
    try:
        canonical = catalog.resolve(model_id)
    except ModelNotFound:
        try:
            speech_canonical = catalog.resolve_speech(model_id)
        except ModelNotFound as e:
            raise not_found from e
        if not _allowed(key, catalog.speech_names_of(speech_canonical)):
            raise not_found from None
        return _speech_card(gateway, model_id).model_dump()
    if not _allowed(key, catalog.names_of(canonical)):
        raise not_found
    return _card(gateway, model_id).model_dump()


def _allowed(key: KeyRecord | None, names: set[str]) -> bool:
    return key is None or key.models is None or not names.isdisjoint(key.models)


def _card(gateway: Gateway, model_id: str) -> ModelCard:
    catalog = gateway.router.catalog
    canonical = catalog.resolve(model_id)
    spec = catalog.models[canonical]
    return ModelCard(
        id=model_id,
        created=catalog.created,
        owned_by=spec.owned_by,
        capabilities=list(spec.capabilities),
        alias_of=canonical if canonical != model_id else None,
    )


def _speech_card(gateway: Gateway, model_id: str) -> ModelCard:
    catalog = gateway.router.catalog
    canonical = catalog.resolve_speech(model_id)
    return ModelCard(
        id=model_id,
        created=catalog.created,
        owned_by=catalog.speech_models[canonical].owned_by,
        capabilities=[SPEECH_CAPABILITY],
        alias_of=canonical if canonical != model_id else None,
    )


def _chat_card(gateway: Gateway, model_id: str) -> ModelCard:
    return _plain_card(gateway, model_id, gateway.router.catalog.chat_models[model_id].owned_by, "chat")


def _voice_agent_card(gateway: Gateway, agent_id: str) -> ModelCard:
    owned_by = gateway.router.catalog.voice_agents[agent_id].owned_by
    return _plain_card(gateway, agent_id, owned_by, VOICE_AGENT_CAPABILITY)


def _plain_card(gateway: Gateway, model_id: str, owned_by: str, capability: str) -> ModelCard:
    """The card of a model with one capability and no aliases (a chat model, a voice agent)."""
    return ModelCard(
        id=model_id, created=gateway.router.catalog.created, owned_by=owned_by, capabilities=[capability]
    )
