"""POST /v1/transcripts (streamed over SSE, or not), GET/PATCH/DELETE of the caller's stored transcripts, and
the seed's deprecated aliases POST /asr/transcribe/stream and POST /asr/transcribe."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from earshot.api.admission import Admission
from earshot.api.context import Gateway, get_gateway, key_id_of
from earshot.api.openai.errors import OpenAIError, invalid_form_field, invalid_json_body
from earshot.api.openai.rest import read_form, require_language
from earshot.api.transcripts.documents import (
    MEDIA_TYPES,
    Document,
    ExportFormat,
    ValidatedParagraphs,
    paragraphs_json,
    render,
    transcript_id,
)
from earshot.api.transcripts.job import (
    Failed,
    Finished,
    JobEvent,
    Queued,
    Started,
    Transcribed,
    TranscriptJob,
    TranscriptUpload,
)
from earshot.api.transcripts.protocol import StreamState, TranscriptEvents
from earshot.api.uploads import (
    UploadedForm,
    body_pace,
)
from earshot.routing.catalog import ModelNotFound
from earshot.routing.router import Route

router = APIRouter()
GatewayDep = Annotated[Gateway, Depends(get_gateway)]
DEFAULT_PAGE = 20
MAX_PAGE = 100
# earshot's refusal codes as the `error` event's codes.
SSE_ERROR_CODES = {
    "upstream_error": "UPSTREAM_SERVICE_ERROR",
    "invalid_audio": "INVALID_AUDIO",
    "empty_file": "INVALID_AUDIO",
    "audio_too_long": "AUDIO_TOO_LONG",
    "engine_error": "ENGINE_ERROR",
    "server_busy": "SERVER_BUSY",
    "insufficient_quota": "INSUFFICIENT_CREDITS",
    "internal_error": "INTERNAL_ERROR",
}


class TranscriptParams(BaseModel):
    """The form fields of POST /v1/transcripts, other than the file."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    language: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})?$")
    name: str | None = Field(default=None, max_length=500)
    use_cache: bool = True
    stream: bool | None = None

    @field_validator("model", "language", "name", "stream", mode="before")
    @classmethod
    def _blank_is_absent(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @classmethod
    def from_form(cls, form: UploadedForm) -> TranscriptParams:
        """Validate the form's fields; a bad one is a 400 naming it."""
        raw = {name: form.first(name) for name in cls.model_fields if form.first(name) is not None}
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise invalid_form_field(e) from e


@router.post("/v1/transcripts", response_model=None)
async def create_transcript(request: Request, gateway: GatewayDep) -> Response:
    """Transcribe an upload into a stored document; streamed (SSE) when asked, else the document."""
    return await _create(request, gateway, route_name="transcripts", stream_default=None)


@router.post("/asr/transcribe/stream", response_model=None, deprecated=True)
async def seed_transcribe_stream(request: Request, gateway: GatewayDep) -> Response:
    """Deprecated: POST /v1/transcripts, streamed."""
    return await _create(request, gateway, route_name="asr.transcribe.stream", stream_default=True)


@router.post("/asr/transcribe", response_model=None, deprecated=True)
async def seed_transcribe(request: Request, gateway: GatewayDep) -> Response:
    """Deprecated: POST /v1/transcripts, not streamed."""
    return await _create(request, gateway, route_name="asr.transcribe", stream_default=False)


async def _create(
    request: Request, gateway: Gateway, *, route_name: str, stream_default: bool | None
) -> Response:
    admission = await gateway.admit(request, bucket="transcribe", route=route_name)
    async with admission:
        form = await read_form(request, gateway.accounts.dials.current.max_upload_bytes, body_pace(gateway))
        params = TranscriptParams.from_form(form)
        route = _route(gateway, params, admission)
        request.state.model = route.model_id
        assert form.file is not None
        upload = TranscriptUpload(
            audio=form.file,
            content_type=form.file_content_type,
            name=params.name or form.filename or "untitled",
            language=params.language,
            use_cache=params.use_cache,
        )
        document_id = transcript_id(admission.key_id, form.file, route.model_id, params.language)
        stream = params.stream
        if stream is None:
            stream = stream_default if stream_default is not None else _accepts_sse(request)
        dials = gateway.accounts.dials.current
        # A streamed caller is told its place in line and kept alive, so it may wait longer than a plain one.
        queue_wait_s = dials.transcript_queue_wait_s if stream else None
        job = TranscriptJob(gateway, admission, route, upload, document_id, queue_wait_s)
        if not stream:
            return await _document(job, request)
        admission.hand_off()
        keepalive_s = dials.sse_keepalive_s
        return StreamingResponse(
            _events(job, request, admission, keepalive_s),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


def _accepts_sse(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "").lower()


def _route(gateway: Gateway, params: TranscriptParams, admission: Admission) -> Route:
    try:
        route = gateway.router.route(params.model)
    except ModelNotFound as e:
        raise OpenAIError(
            404, f"the model {params.model!r} does not exist", code="model_not_found", param="model"
        ) from e
    admission.use_model(
        params.model or route.model_id, route, gateway.router.catalog.names_of(route.model_id)
    )
    if "transcribe" not in route.spec.capabilities:
        raise OpenAIError(
            400,
            f"model {route.model_id!r} does not offer transcribe",
            code="unsupported_model",
            param="model",
        )
    require_language(route, params.language, params.model or route.model_id)
    return route


async def _document(job: TranscriptJob, request: Request) -> Response:
    """The not-streamed answer: the document, or the failure in OpenAI's error shape."""
    ended: list[Finished | Failed] = []
    await job.run(lambda event: ended.append(event) if isinstance(event, Finished | Failed) else None)
    request.state.audio_seconds = job.audio_seconds
    result = ended[-1]
    if isinstance(result, Failed):
        error = OpenAIError.of(result.failure, param="file" if result.failure.status == 400 else None)
        raise error from result.cause
    return JSONResponse(result.document.model_dump(mode="json"))


def _feed(writer: TranscriptEvents, event: JobEvent, now: float) -> str:
    """The text the writer sends for one event of the job."""
    match event:
        case Queued(position):
            # A fallback's gate may report after the stream started: a client is past the queue by then.
            return writer.queued(position, now) if writer.state is StreamState.QUEUED else ""
        case Started(total_time):
            return writer.started(total_time, now)
        case Transcribed(paragraphs, current_time):
            return writer.transcribed(paragraphs, current_time, now)
        case Finished(document):
            return writer.done(document, now)
        case Failed(failure, _):
            code = SSE_ERROR_CODES.get(failure.code, failure.code.upper())
            return writer.error(code, failure.message, now)


async def _events(
    job: TranscriptJob, request: Request, admission: Admission, keepalive_s: float
) -> AsyncIterator[str]:
    """The SSE answer: the job's events as the writer renders them, keepalives between; metered once."""
    loop = asyncio.get_running_loop()
    writer = TranscriptEvents(job.document_id, keepalive_s, loop.time())
    events: asyncio.Queue[JobEvent] = asyncio.Queue()
    work = asyncio.create_task(job.run(events.put_nowait))
    gone = asyncio.create_task(_client_gone(request))
    next_event: asyncio.Task[JobEvent] | None = None
    try:
        while not writer.ended:
            if next_event is None:
                next_event = asyncio.create_task(events.get())
            done, _ = await asyncio.wait(
                {next_event, gone},
                timeout=writer.keepalive_due_in(loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if next_event in done:
                text = _feed(writer, next_event.result(), loop.time())
                next_event = None
            elif gone in done:
                return
            else:
                text = writer.tick(loop.time())
            if text:
                yield text
    finally:
        if next_event is not None:
            next_event.cancel()
        gone.cancel()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        request.state.audio_seconds = job.audio_seconds
        await admission.finish(job.outcome if writer.ended else "client_closed")


async def _client_gone(request: Request) -> None:
    """Returns when the client closes the connection (the body was read whole before the answer starts)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class TranscriptPage(BaseModel):
    """One page of the caller's transcripts, newest first."""

    object: str = "list"
    data: list[Document]
    has_more: bool
    # Pass as `after` for the next page (None on an empty page).
    last_id: str | None


@router.get("/v1/transcripts")
async def list_transcripts(
    request: Request,
    gateway: GatewayDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="documents per page")] = DEFAULT_PAGE,
    after: Annotated[str | None, Query(description="the last id of the page before")] = None,
) -> TranscriptPage:
    """The caller's stored transcripts, newest first, `limit` at a time after the document `after`."""
    key = await gateway.identify(request)
    owner = key_id_of(key)
    records = await gateway.transcripts.page(owner, limit=limit + 1, after=after)
    data = [Document.of(record) for record in records[:limit]]
    return TranscriptPage(data=data, has_more=len(records) > limit, last_id=data[-1].id if data else None)


@router.get("/v1/transcripts/{document_id}", response_model=None)
async def get_transcript(
    document_id: str,
    request: Request,
    gateway: GatewayDep,
    format: Annotated[ExportFormat, Query(description="json, txt, srt or vtt")] = ExportFormat.JSON,
) -> Response:
    """One of the caller's transcripts, as JSON or rendered (the validated version when there is one)."""
    document = await _owned(document_id, request, gateway)
    headers = {}
    if format is not ExportFormat.JSON:
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in document.name.rsplit(".", 1)[0])
        headers["Content-Disposition"] = f'attachment; filename="{stem or document.id}.{format.value}"'
    return Response(render(document, format), media_type=MEDIA_TYPES[format], headers=headers)


@router.patch("/v1/transcripts/{document_id}")
async def validate_transcript(document_id: str, request: Request, gateway: GatewayDep) -> Document:
    """Keep a reviewed version beside the machine one (`{"validated": [paragraphs]}`; null clears it)."""
    key = await gateway.identify(request)
    owner = key_id_of(key)
    try:
        body = ValidatedParagraphs.model_validate_json(await request.body())
    except ValidationError as e:
        raise invalid_json_body(e) from e
    validated = paragraphs_json(body.validated) if body.validated is not None else None
    record = await gateway.transcripts.set_validated(document_id, owner, validated, datetime.now(UTC))
    if record is None:
        raise _not_found(document_id)
    return Document.of(record)


@router.delete("/v1/transcripts/{document_id}")
async def delete_transcript(document_id: str, request: Request, gateway: GatewayDep) -> dict[str, Any]:
    """Delete one of the caller's transcripts."""
    key = await gateway.identify(request)
    if not await gateway.transcripts.delete(document_id, key_id_of(key)):
        raise _not_found(document_id)
    return {"id": document_id, "object": "transcript.deleted", "deleted": True}


async def _owned(document_id: str, request: Request, gateway: Gateway) -> Document:
    key = await gateway.identify(request)
    record = await gateway.transcripts.get(document_id, key_id_of(key))
    if record is None:
        raise _not_found(document_id)
    return Document.of(record)


def _not_found(document_id: str) -> OpenAIError:
    return OpenAIError(404, f"no transcript {document_id!r}", code="transcript_not_found", param="id")
