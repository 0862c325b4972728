"""A fake Sarvam AI: REST `POST /speech-to-text` (multipart), speaking Sarvam's wire protocol.

It checks the `api-subscription-key` header (403 `invalid_api_key_error` otherwise, as Sarvam answers),
refuses audio over 30 s as Sarvam's REST API does, and answers `{request_id, transcript, timestamps,
diarized_transcript, language_code}`. What it "hears" comes from `transcriber(pcm16, rate_hz)`, by default
a fixed script; a test can set its own.
"""

from __future__ import annotations

import asyncio
import io
import uuid
import wave
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.upstream_faults import Faults

MAX_AUDIO_S = 30.0
MODELS = ("saarika:v1", "saarika:v2", "saarika:v2.5", "saarika:flash", "saaras:v3", "saaras:v4")
ERRORS = {
    400: ("invalid_request_error", "Invalid request"),
    403: ("invalid_api_key_error", "Invalid API key. Please check your API subscription key."),
    422: ("unprocessable_entity_error", "Unprocessable entity"),
    429: ("rate_limit_exceeded_error", "Rate limit exceeded. Please try again later."),
    500: ("internal_server_error", "Internal server error"),
    503: ("rate_limit_exceeded_error", "Service is under high load. Please try again later."),
}


def error_response(
    status: int, message: str | None = None, retry_after_s: float | None = None
) -> JSONResponse:
    """Sarvam's error body for a status."""
    code, default = ERRORS.get(status, ("internal_server_error", "Internal server error"))
    headers = {"retry-after": str(retry_after_s)} if retry_after_s is not None else None
    body = {"error": {"message": message or default, "code": code, "request_id": uuid.uuid4().hex}}
    return JSONResponse(body, status_code=status, headers=headers)


class SarvamFake:
    """The fake's settings, faults and request log, and its ASGI app (`.app`)."""

    def __init__(
        self, api_key: str = "sarvam-test-key", script: str = "namaste from the fake sarvam"
    ) -> None:
        self.api_key = api_key
        self.transcriber: Callable[[bytes, int], str] = lambda _pcm, _rate: script
        self.faults = Faults()
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.base_url = ""  # set by whoever serves the app, for tests' convenience
        self.app = Starlette(routes=[Route("/speech-to-text", self._speech_to_text, methods=["POST"])])

    async def _speech_to_text(self, request: Request) -> JSONResponse:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: Request) -> JSONResponse:
        if request.headers.get("api-subscription-key") != self.api_key:
            return error_response(403)
        form = await request.form()
        upload = form.get("file")
        fields = {key: str(value) for key, value in form.items() if key != "file"}
        if not isinstance(upload, UploadFile):
            return error_response(422, "Field required: file")
        data = await upload.read()
        try:
            with wave.open(io.BytesIO(data)) as wav:
                rate, frames = wav.getframerate(), wav.getnframes()
                pcm = wav.readframes(frames)
        except (wave.Error, EOFError):
            return error_response(400, "Invalid audio file")
        duration_s = frames / rate
        self.requests.append({**fields, "duration_s": duration_s})
        if self.faults.delay_s:
            await asyncio.sleep(self.faults.delay_s)
        failure = self.faults.take_failure()
        if failure is not None:
            return error_response(failure.status, retry_after_s=failure.retry_after_s)
        if fields.get("model", "saarika:v2.5") not in MODELS:
            return error_response(400, f"Invalid model: {fields.get('model')}")
        if duration_s > MAX_AUDIO_S:
            return error_response(400, "Audio duration exceeds the maximum limit of 30 seconds")
        transcript = self.transcriber(pcm, rate)
        timestamps = None
        if fields.get("with_timestamps") == "true" and transcript:
            timestamps = {
                "words": [transcript],
                "start_time_seconds": [0.0],
                "end_time_seconds": [duration_s],
            }
        language = fields.get("language_code", "unknown")
        return JSONResponse(
            {
                "request_id": uuid.uuid4().hex,
                "transcript": transcript,
                "timestamps": timestamps,
                "diarized_transcript": None,
                "language_code": "hi-IN" if language == "unknown" else language,
            }
        )
