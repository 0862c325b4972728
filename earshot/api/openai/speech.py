"""OpenAI REST: POST /v1/audio/speech, text to speech in OpenAI's shape, streamed as it is synthesized."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from earshot.api.admission import Admission
from earshot.api.context import Gateway, get_gateway
from earshot.api.openai.errors import OpenAIError
from earshot.api.uploads import UploadTooLarge, UploadTooSlow, body_pace, read_body
from earshot.audio.encode import SpeechFormat, content_type
from earshot.engines.base import EngineError
from earshot.routing.catalog import ModelNotFound
from earshot.routing.gate import ServerBusy
from earshot.routing.synthesis import SpeechRoute, SpeechStream
from earshot.store.records import Outcome
from earshot.voice.tts import MAX_SPEED, MIN_SPEED, SpeechRequest
from earshot.voice.voices import UnknownVoice

log = logging.getLogger(__name__)
router = APIRouter()
GatewayDep = Annotated[Gateway, Depends(get_gateway)]

# OpenAI's limit on `input`, and on the whole JSON body (input and instructions with room to spare).
MAX_INPUT_CHARS = 4096
MAX_INSTRUCTIONS_CHARS = 4096
MAX_BODY_BYTES = 256 * 1024
_FORMATS = ", ".join(fmt.value for fmt in SpeechFormat)


class SpeechParams(BaseModel):
    """The JSON body of a speech request."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    input: str
    voice: str = Field(min_length=1)
    response_format: SpeechFormat = SpeechFormat.MP3
    speed: float = Field(default=1.0, ge=MIN_SPEED, le=MAX_SPEED)
    instructions: str | None = Field(default=None, max_length=MAX_INSTRUCTIONS_CHARS)
    stream_format: Literal["audio"] = "audio"

    @field_validator("model", "instructions", mode="before")
    @classmethod
    def _blank_is_absent(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @classmethod
    def from_body(cls, body: bytes) -> SpeechParams:
        """Validate the body, each problem a 400 in OpenAI's shape naming its parameter."""
        try:
            raw = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise OpenAIError(400, "the request body is not valid JSON", code="invalid_json") from e
        if not isinstance(raw, dict):
            raise OpenAIError(400, "the request body must be a JSON object", code="invalid_json")
        try:
            params = cls.model_validate(raw)
        except ValidationError as e:
            raise _invalid(e) from e
        if not params.input.strip():
            raise OpenAIError(
                400, "input is empty: give the text to speak", code="invalid_value", param="input"
            )
        if len(params.input) > MAX_INPUT_CHARS:
            raise OpenAIError(
                400,
                f"input is {len(params.input)} characters; the limit is {MAX_INPUT_CHARS}",
                code="string_above_max_length",
                param="input",
            )
        return params


def _invalid(error: ValidationError) -> OpenAIError:
    first = error.errors()[0]
    param = str(first["loc"][0]) if first["loc"] else None
    if first["type"] == "missing":
        return OpenAIError(
            400, f"missing required parameter: {param}", code="missing_required_parameter", param=param
        )
    if param == "response_format":
        message = f"response_format {first.get('input')!r} is not offered; use one of {_FORMATS}"
    elif param == "speed":
        message = f"speed must be between {MIN_SPEED} and {MAX_SPEED}"
    elif param == "stream_format":
        message = "stream_format 'sse' is not offered; the audio streams as the response body"
    else:
        message = f"invalid {param}: {first['msg']}"
    return OpenAIError(400, message, code="invalid_value", param=param)


@router.post("/v1/audio/speech", response_model=None)
async def create_speech(request: Request, gateway: GatewayDep) -> Response:
    """Speak the input text in the requested voice and format."""
    admission = await gateway.admit(request, bucket="speech", route="openai.speech")
    async with admission:
        return await _speak(request, gateway, admission)


async def _speak(request: Request, gateway: Gateway, admission: Admission) -> Response:
    try:
        body = await read_body(request, MAX_BODY_BYTES, body_pace(gateway))
    except UploadTooLarge as e:
        raise OpenAIError(413, str(e), code="request_too_large") from e
    except UploadTooSlow as e:
        raise OpenAIError(408, str(e), code="request_timeout") from e
    params = SpeechParams.from_body(body)
    route = _route(gateway, params.model)
    request.state.model = route.model_id
    names = gateway.router.catalog.speech_names_of(route.model_id)
    admission.use_speech_model(params.model or route.model_id, route, names, len(params.input))
    speech = SpeechRequest(
        text=params.input,
        voice=params.voice,
        response_format=params.response_format,
        speed=params.speed,
        instructions=params.instructions,
    )
    try:
        stream = await route.chain.open(speech)
    except UnknownVoice as e:
        raise OpenAIError(400, str(e), code="invalid_value", param="voice") from e
    except (EngineError, ServerBusy) as e:
        log.error("speech model %s failed: %s", route.model_id, e)
        raise OpenAIError.from_engine(e) from e
    admission.hand_off()
    return StreamingResponse(_body(stream, admission), media_type=content_type(params.response_format))


def _route(gateway: Gateway, model_id: str | None) -> SpeechRoute:
    try:
        return gateway.router.synthesis.route(model_id)
    except ModelNotFound as e:
        message = (
            f"the model {model_id!r} does not exist"
            if model_id
            else "this server has no speech synthesis model"
        )
        raise OpenAIError(404, message, code="model_not_found", param="model") from e


async def _body(stream: SpeechStream, admission: Admission) -> AsyncIterator[bytes]:
    """The audio as it is synthesized; the usage record is written once, however the stream ends."""
    outcome: Outcome = "client_closed"
    try:
        async for data in stream:
            yield data
        outcome = "ok"
    except EngineError as e:
        # The status line has gone: the connection is dropped so the client sees the body is incomplete.
        log.error("speech model %s failed mid-stream: %s", stream.model_id, e)
        outcome = "upstream_error"
        raise
    finally:
        try:
            await stream.aclose()
        finally:
            await admission.finish(outcome)
