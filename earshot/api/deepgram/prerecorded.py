"""Deepgram prerecorded transcription: POST /v1/listen with audio as the body, or `{"url": ...}`.

Fetching a URL on a caller's behalf is server-side request forgery waiting to happen, so it is refused unless
the operator lists the hosts it may fetch from (`EARSHOT_LISTEN_URL_HOSTS`); redirects are not followed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from functools import partial
from typing import Annotated
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from earshot.accounts.errors import AccessDenied
from earshot.api.admission import Admission
from earshot.api.context import Gateway, get_gateway
from earshot.api.deepgram.params import DeepgramError, ListenParams, check_language, choose_model
from earshot.api.deepgram.results import ModelInfo, prerecorded
from earshot.api.uploads import UploadTooLarge, UploadTooSlow, body_pace, decode_upload, read_body
from earshot.audio.decode import AudioDecodeError, AudioTooLong, EmptyAudio, encoded_audio_async, pcm16_blocks
from earshot.audio.pcm import Audio
from earshot.audio.raw import RawAudioReader
from earshot.engines.base import EngineError, TranscribeOptions
from earshot.routing.catalog import ModelNotFound
from earshot.routing.gate import ServerBusy

log = logging.getLogger(__name__)
router = APIRouter()
GatewayDep = Annotated[Gateway, Depends(get_gateway)]
URL_FETCH_TIMEOUT_S = 30.0


@router.post("/v1/listen", response_model=None)
async def listen_prerecorded(request: Request, gateway: GatewayDep) -> Response:
    """Transcribe a whole recording in Deepgram's response shape."""
    request_id = str(uuid.uuid4())
    query = request.query_params
    try:
        params = ListenParams.from_query(query, {name: query.getlist(name) for name in query})
        admission = await gateway.admit(request, bucket="transcribe", route="deepgram.listen")
        async with admission:
            body = await _transcribe(request, gateway, params, request_id, admission)
    except DeepgramError as e:
        return _error_response(request, e, request_id)
    except AccessDenied as denial:
        return _error_response(request, DeepgramError.denied(denial), request_id)
    except Exception:
        # Anything unforeseen still answers in Deepgram's shape; the trace goes to the log only.
        incident = uuid.uuid4().hex[:12]
        log.exception("POST /v1/listen failed incident=%s", incident)
        error = DeepgramError(500, "INTERNAL_SERVER_ERROR", f"Internal server error (incident {incident}).")
        return _error_response(request, error, request_id)
    return JSONResponse(body, headers={"dg-request-id": request_id})


def _error_response(request: Request, error: DeepgramError, request_id: str) -> Response:
    request.state.outcome = error.err_code.lower().replace(" ", "_")
    return Response(
        error.body(request_id),
        status_code=error.status,
        media_type="application/json",
        headers={**error.headers, "dg-request-id": request_id},
    )


async def _transcribe(
    request: Request, gateway: Gateway, params: ListenParams, request_id: str, admission: Admission
) -> dict[str, object]:
    choice = choose_model(gateway.router.catalog, params.model)
    try:
        route = gateway.router.route(choice.model_id)
    except ModelNotFound as e:
        raise DeepgramError.bad_request(f"No such model: {choice.model_id}") from e
    request.state.model = route.model_id
    admission.use_model(
        choice.model_id or route.model_id, route, gateway.router.catalog.names_of(route.model_id)
    )
    if "transcribe" not in route.spec.capabilities:
        raise DeepgramError.bad_request(f"The model {route.model_id} does not transcribe recordings.")
    check_language(params.language, route)
    data, content_type = await _audio_bytes(request, gateway)
    audio = await _decode(data, content_type, params, gateway)
    request.state.audio_seconds = audio.duration_s
    await admission.reserve(round(audio.duration_s * 1000))
    options = TranscribeOptions(language=params.language, prompt=params.prompt, word_timestamps=True)
    try:
        transcript = await gateway.transcribe(route, audio, options)
    except (EngineError, ServerBusy) as e:
        raise DeepgramError.from_engine(e) from e
    return prerecorded(
        transcript,
        request_id=request_id,
        sha256=hashlib.sha256(data).hexdigest(),
        channels=params.channels,
        model=ModelInfo(route.model_id, route.spec.engine),
        punctuate=params.punctuated,
        diarize=params.diarize,
        utterances=params.utterances,
        paragraphs=params.paragraphs or params.smart_format,
    )


async def _audio_bytes(request: Request, gateway: Gateway) -> tuple[bytes, str | None]:
    """The audio: the body itself, or what the JSON body's `url` points at (allowed hosts only)."""
    limit = gateway.accounts.dials.current.max_upload_bytes
    content_type = request.headers.get("content-type")
    try:
        data = await read_body(request, limit, body_pace(gateway))
    except UploadTooLarge as e:
        message = f"The body is larger than the {limit} byte limit."
        raise DeepgramError(413, "PAYLOAD_TOO_LARGE", message) from e
    except UploadTooSlow as e:
        raise DeepgramError(408, "REQUEST_TIMEOUT", f"{str(e).capitalize()}.") from e
    if content_type and content_type.split(";")[0].strip().lower() == "application/json":
        return await _fetch(data, gateway, limit)
    if not data:
        raise DeepgramError.bad_request("The request body is empty: send audio, or JSON with a url.")
    return data, content_type


async def _fetch(body: bytes, gateway: Gateway, limit: int) -> tuple[bytes, str | None]:
    try:
        url = json.loads(body).get("url")
    except (json.JSONDecodeError, AttributeError, RecursionError) as e:
        raise DeepgramError.bad_request(
            "Content-type was application/json, but the JSON is not valid."
        ) from e
    if not isinstance(url, str) or not url:
        raise DeepgramError.bad_request("The JSON body needs a url.")
    allowed = gateway.settings.listen_url_hosts
    parts = urlsplit(url)
    if not allowed:
        raise DeepgramError(
            403, "URL_NOT_ALLOWED", "This server does not fetch URLs; send the audio in the request body."
        )
    if parts.scheme not in ("http", "https") or (parts.hostname or "").lower() not in allowed:
        raise DeepgramError(403, "URL_NOT_ALLOWED", "This server does not fetch audio from that host.")
    data = bytearray()
    try:
        async with (
            httpx.AsyncClient(timeout=URL_FETCH_TIMEOUT_S, follow_redirects=False) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise DeepgramError.bad_request(f"Fetching the url gave HTTP {response.status_code}.")
            async for chunk in response.aiter_bytes():
                data.extend(chunk)
                if len(data) > limit:
                    raise DeepgramError(
                        413, "PAYLOAD_TOO_LARGE", f"The audio is over the {limit} byte limit."
                    )
            content_type = response.headers.get("content-type")
    except httpx.HTTPError as e:
        log.info("fetching audio for /v1/listen failed: %s", type(e).__name__)
        raise DeepgramError.bad_request("Could not fetch the url.") from e
    return bytes(data), content_type


async def _decode(data: bytes, content_type: str | None, params: ListenParams, gateway: Gateway) -> Audio:
    limit_s = gateway.settings.max_audio_seconds
    limiter = gateway.decode_limiter
    try:
        raw_format = params.raw_format
        if raw_format is not None:
            pcm16 = RawAudioReader(raw_format).read(data)
            read = partial(pcm16_blocks, pcm16, sample_rate=raw_format.rate_hz, max_seconds=limit_s)
            return await encoded_audio_async(read, limiter=limiter)
        return await decode_upload(data, content_type, limit_s, limiter)
    except AudioTooLong as e:
        raise DeepgramError.bad_request(f"The audio is longer than the {limit_s:g} s limit.") from e
    except EmptyAudio as e:
        raise DeepgramError.bad_request("The audio holds no samples.") from e
    except AudioDecodeError as e:
        raise DeepgramError.bad_request(f"Bad Request: failed to process audio: {e}") from e
