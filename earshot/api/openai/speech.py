"""OpenAI REST: POST /v1/audio/speech, text to speech in OpenAI's shape, streamed as it is synthesized."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.types import Send

from earshot.api.admission import Admission
from earshot.api.context import Gateway, get_gateway
from earshot.api.openai.errors import OpenAIError
from earshot.api.openai.rest import read_json_body
from earshot.api.uploads import body_pace
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


def _openapi() -> dict[str, Any]:
    """The JSON body as OpenAPI shows it (the route reads it itself, within its size limit)."""
    schema = SpeechParams.model_json_schema()
    definitions = schema.pop("$defs", {})
    for field in schema["properties"].values():
        reference = field.pop("$ref", None)
        if reference is not None:
            field.update(definitions[reference.rsplit("/", 1)[-1]])
    schema["properties"]["input"]["maxLength"] = MAX_INPUT_CHARS
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_AUDIO_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "the audio, streamed", "content": {content_type(fmt): {} for fmt in SpeechFormat}}
}


@router.post("/v1/audio/speech", response_model=None, openapi_extra=_openapi(), responses=_AUDIO_RESPONSE)
async def create_speech(request: Request, gateway: GatewayDep) -> Response:
    """Speak the input text in the requested voice and format."""
    admission = await gateway.admit(request, bucket="speech", route="openai.speech")
    async with admission:
        return await _speak(request, gateway, admission)


async def _speak(request: Request, gateway: Gateway, admission: Admission) -> Response:
    body = await read_json_body(request, MAX_BODY_BYTES, body_pace(gateway))
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
    return _SpeechResponse(_SpeechBody(stream, admission, request), content_type(params.response_format))


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


class _SpeechBody:
    """The audio as it is synthesized; the usage record is written once, however the stream ends."""

    def __init__(self, stream: SpeechStream, admission: Admission, request: Request) -> None:
        self.stream = stream
        self.admission = admission
        self.request = request
        # Set when the synthesis failed after the status line went: the body must not end as if complete.
        self.cut = False

    async def __aiter__(self) -> AsyncGenerator[bytes, None]:
        outcome: Outcome = "client_closed"
        try:
            async for data in self.stream:
                yield data
            outcome = "ok"
        except EngineError as e:
            log.error("speech model %s failed mid-stream: %s", self.stream.model_id, e)
            outcome = "upstream_error"
            self.request.state.outcome = outcome
            self.cut = True
        finally:
            try:
                await self.stream.aclose()
            finally:
                await self.admission.finish(outcome)


class _SpeechResponse(StreamingResponse):
    """A streamed body that, when cut short, ends without its last chunk, so the server drops the connection
    and the client sees an incomplete body rather than a short file."""

    def __init__(self, body: _SpeechBody, media_type: str) -> None:
        super().__init__(body, media_type=media_type)
        self._body = body

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        chunks = aiter(self._body)
        try:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            # A client gone mid-send stops the synthesis and writes the record now, not when collected.
            await chunks.aclose()
        if not self._body.cut:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
