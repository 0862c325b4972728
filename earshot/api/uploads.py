"""Uploaded audio: bodies and multipart forms read in chunks and refused as soon as they pass the size limit,
then decoded by their content type (raw PCM16 as declared, anything else by its container).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from functools import partial

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from earshot.api.context import Gateway
from earshot.audio.decode import (
    MAX_RAW_RATE_HZ,
    MIN_RAW_RATE_HZ,
    container_blocks,
    encoded_audio_async,
    parse_raw_pcm_content_type,
    pcm16_audio_async,
)
from earshot.audio.pcm import Audio
from earshot.audio.wav import pcm16_wav_layout

MAX_FORM_FIELDS = 64
MAX_FIELD_BYTES = 64 * 1024


class UploadTooLarge(Exception):
    """The body passed `limit_bytes`."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"request body is larger than the {limit_bytes} byte limit")
        self.limit_bytes = limit_bytes


class UploadTooSlow(Exception):
    """The body stalled for longer than the idle timeout, or took longer in all than the upload deadline."""


@dataclass(frozen=True, slots=True)
class BodyPace:
    """How slowly a client may send a body: the longest pause between chunks, and the longest upload."""

    idle_timeout_s: float
    deadline_s: float


def body_pace(gateway: Gateway) -> BodyPace:
    """The pace the server's settings allow a request body."""
    settings = gateway.settings
    return BodyPace(settings.body_idle_timeout_s, settings.upload_deadline_s)


class BadUpload(Exception):
    """The body is not a well-formed multipart form; the message says why."""


@dataclass(slots=True)
class UploadedForm:
    """A parsed form: text fields (repeatable) and at most one file, held in memory up to the limit."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    file: bytes | None = None
    filename: str | None = None
    file_content_type: str | None = None

    def first(self, *names: str) -> str | None:
        """The first value of the first field present among `names`."""
        for name in names:
            if self.fields.get(name):
                return self.fields[name][0]
        return None

    def all(self, *names: str) -> list[str]:
        """Every value of every field among `names` (e.g. `key` and `key[]`)."""
        return [value for name in names for value in self.fields.get(name, [])]


def _refuse_declared(request: Request, limit_bytes: int) -> None:
    """A Content-Length over the limit is refused before any of the body is read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise UploadTooLarge(limit_bytes)


async def _bounded(request: Request, limit_bytes: int, pace: BodyPace) -> AsyncGenerator[bytes, None]:
    # A body dripped a few bytes at a time would hold the request's session slot for as long as the client
    # likes; the pace bounds it.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + pace.deadline_s
    chunks = request.stream().__aiter__()
    received = 0
    while True:
        left_s = deadline - loop.time()
        try:
            chunk = await asyncio.wait_for(anext(chunks), min(pace.idle_timeout_s, max(0.0, left_s)))
        except StopAsyncIteration:
            return
        except TimeoutError:
            if left_s <= pace.idle_timeout_s:
                raise UploadTooSlow(f"the upload took longer than {pace.deadline_s:g} s") from None
            raise UploadTooSlow(f"the upload stalled for {pace.idle_timeout_s:g} s") from None
        received += len(chunk)
        if received > limit_bytes:
            raise UploadTooLarge(limit_bytes)
        yield chunk


async def read_multipart(
    request: Request, limit_bytes: int, pace: BodyPace, file_field: str = "file"
) -> UploadedForm:
    """Parse a multipart body of at most `limit_bytes`; a larger Content-Length is refused unread."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise BadUpload("expected a multipart/form-data body")
    _refuse_declared(request, limit_bytes)
    parser = MultiPartParser(
        request.headers,
        _bounded(request, limit_bytes, pace),
        max_files=4,
        max_fields=MAX_FORM_FIELDS,
        max_part_size=MAX_FIELD_BYTES,
    )
    try:
        parsed = await parser.parse()
    except MultiPartException as e:
        raise BadUpload(f"malformed multipart body: {e.message}") from e
    form = UploadedForm()
    try:
        for name, value in parsed.multi_items():
            if isinstance(value, UploadFile):
                if name == file_field and form.file is None:
                    form.file = await value.read()
                    form.filename = value.filename
                    form.file_content_type = value.content_type
            else:
                form.fields.setdefault(name, []).append(value)
    finally:
        await parsed.close()
    return form


async def read_body(request: Request, limit_bytes: int, pace: BodyPace) -> bytes:
    """The whole body, of at most `limit_bytes`; a larger Content-Length is refused unread."""
    _refuse_declared(request, limit_bytes)
    data = bytearray()
    async for chunk in _bounded(request, limit_bytes, pace):
        data.extend(chunk)
    return bytes(data)


async def decode_upload(
    data: bytes, content_type: str | None, max_seconds: float, limiter: asyncio.Semaphore
) -> Audio:
    """Uploaded audio: raw PCM16 where the content type says so (`audio/L16; rate=...`), a PCM16 WAV from its
    header, else any container.

    It is kept encoded (decoded once to count it, then again by whoever reads it), so a long upload is never
    held whole as samples. Raises the decoder's AudioTooLong, EmptyAudio or AudioDecodeError for the route to
    answer in its shape.
    """
    raw_format = parse_raw_pcm_content_type(content_type)
    if raw_format is not None:
        rate, channels = raw_format
        return await pcm16_audio_async(
            data, sample_rate=rate, channels=channels, max_seconds=max_seconds, limiter=limiter
        )
    wav = pcm16_wav_layout(data)
    if wav is not None and MIN_RAW_RATE_HZ <= wav.sample_rate <= MAX_RAW_RATE_HZ:
        # A PCM16 WAV (what the OpenAI SDK sends) is counted from its header: no PyAV.
        return await pcm16_audio_async(
            wav.pcm16(data),
            sample_rate=wav.sample_rate,
            channels=wav.channels,
            max_seconds=max_seconds,
            limiter=limiter,
            declared_frames=wav.declared_frames,
        )
    return await encoded_audio_async(
        partial(container_blocks, data, max_seconds=max_seconds), limiter=limiter
    )
