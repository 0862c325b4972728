"""A fake OpenAI and Azure OpenAI speech service on their real wire protocols, with injectable faults.

REST: `POST /v1/audio/transcriptions` and `POST /v1/audio/speech` (and `/compat/v1/...` for a custom base
URL) with `Authorization: Bearer`, and Azure's
`POST /openai/deployments/{deployment}/audio/transcriptions?api-version=` with `api-key`.
Realtime transcription sockets: `WS /v1/realtime?intent=transcription` (GA, or beta with `OpenAI-Beta:
realtime=v1`), Azure's `WS /openai/realtime?api-version=&deployment=` (beta) and `/openai/v1/realtime` (GA).

It "transcribes" by answering its configured `transcript` for any audio, and "speaks" any text as a tone of
`speech_tone_s` seconds in the requested format, streamed in chunks. Faults are set per test:
`fake.faults.fail_next(status=503, times=2)`, `fake.faults.delay_s = 2`,
`fake.faults.close_1011_after_s = 0.5`.
Error bodies carry SECRET_MARKER so tests can check that earshot never passes them on.
"""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from tests.fakes.openai_realtime import SECRET_MARKER, RealtimeSession, SeenSocket
from tests.fakes.upstream_faults import Faults

OPENAI_KEY = "sk-fake-openai-key-5b2e9c"
AZURE_KEY = "azure-fake-key-81d4f0"
AZURE_DEPLOYMENT = "my-transcribe"
REST_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
SPEECH_CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
SPEECH_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)
SPEECH_RATE_HZ = 24_000


@dataclass
class SeenRequest:
    """One REST request as the fake received it."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    fields: dict[str, list[str]]


@dataclass
class SeenSpeech:
    """One `/audio/speech` request as the fake received it: its JSON body."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def openai_error(message: str, kind: str, code: str | None, status: int) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


def wrong_key_error() -> JSONResponse:
    """OpenAI's 401 for a missing or wrong bearer key (its body carries SECRET_MARKER)."""
    return openai_error(
        f"Incorrect API key provided ({SECRET_MARKER})", "invalid_request_error", "invalid_api_key", 401
    )


class FakeOpenAI:
    """The ASGI app and what it saw; `transcript` is what every recognition answers."""

    def __init__(self, transcript: str = "hello from the fake provider") -> None:
        self.transcript = transcript
        self.faults = Faults()
        self.requests: list[SeenRequest] = []
        self.sockets: list[SeenSocket] = []
        self.speech_requests: list[SeenSpeech] = []
        self.speech_tone_s = 0.5
        # The speech body is cut (the connection dropped) after this many chunks of 4096 bytes.
        self.speech_cut_after_chunks: int | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/audio/speech", self._openai_speech, methods=["POST"]),
                Route("/compat/v1/audio/speech", self._openai_speech, methods=["POST"]),
                Route("/v1/audio/transcriptions", self._openai_rest, methods=["POST"]),
                Route("/compat/v1/audio/transcriptions", self._openai_rest, methods=["POST"]),
                Route(
                    "/openai/deployments/{deployment}/audio/transcriptions",
                    self._azure_rest,
                    methods=["POST"],
                ),
                WebSocketRoute("/v1/realtime", self._openai_socket),
                WebSocketRoute("/openai/realtime", self._azure_socket),
                WebSocketRoute("/openai/v1/realtime", self._azure_socket),
            ]
        )

    def all_headers_text(self) -> str:
        """Every header value the fake was sent, for checks that a credential never reached it."""
        seen = [*(r.headers for r in self.requests), *(s.headers for s in self.sockets)]
        return "\n".join(f"{k}: {v}" for headers in seen for k, v in headers.items())

    # --- REST ---

    async def _openai_rest(self, request: Request) -> Response:
        seen = await self._record(request)
        if request.headers.get("authorization") != f"Bearer {OPENAI_KEY}":
            return wrong_key_error()
        return await self._answer(seen, request)

    async def _openai_speech(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return openai_error(
                "We could not parse the JSON body of your request.", "invalid_request_error", None, 400
            )
        self.speech_requests.append(SeenSpeech(request.url.path, dict(request.headers), body))
        if request.headers.get("authorization") != f"Bearer {OPENAI_KEY}":
            return wrong_key_error()
        failure = self.faults.take_failure()
        if failure is not None:
            return openai_error(
                f"The server had an error ({SECRET_MARKER})", "server_error", None, failure.status
            )
        for name in ("model", "input", "voice"):
            if not body.get(name):
                return openai_error(
                    f"Missing required parameter: '{name}'.", "invalid_request_error", None, 400
                )
        fmt = body.get("response_format", "mp3")
        if fmt not in SPEECH_CONTENT_TYPES:
            return openai_error(f"Invalid value: '{fmt}'.", "invalid_request_error", "invalid_value", 400)
        if body["voice"] not in SPEECH_VOICES:
            return openai_error(
                f"Invalid value: '{body['voice']}'.", "invalid_request_error", "invalid_value", 400
            )
        audio = speech_tone(fmt, self.speech_tone_s)
        delay_s, cut_after = self.faults.delay_s, self.speech_cut_after_chunks

        async def chunks() -> AsyncIterator[bytes]:
            for index, start in enumerate(range(0, len(audio), 4096)):
                if index == cut_after:
                    raise ConnectionAbortedError("the fake drops the connection mid-body")
                if delay_s:
                    await asyncio.sleep(delay_s)
                yield audio[start : start + 4096]

        return StreamingResponse(chunks(), media_type=SPEECH_CONTENT_TYPES[fmt])

    async def _azure_rest(self, request: Request) -> Response:
        seen = await self._record(request)
        if request.headers.get("api-key") != AZURE_KEY:
            body = {
                "error": {
                    "code": "401",
                    "message": f"Access denied: invalid subscription key ({SECRET_MARKER})",
                }
            }
            return JSONResponse(body, status_code=401)
        if "api-version" not in request.query_params:
            return JSONResponse({"error": {"code": "404", "message": "Resource not found"}}, status_code=404)
        if request.path_params["deployment"] != AZURE_DEPLOYMENT:
            body = {"error": {"code": "DeploymentNotFound", "message": "The API deployment does not exist."}}
            return JSONResponse(body, status_code=404)
        return await self._answer(seen, request)

    async def _record(self, request: Request) -> SeenRequest:
        form = await request.form()
        fields: dict[str, list[str]] = {}
        duration_s = 1.0
        for name, value in form.multi_items():
            if isinstance(value, str):
                fields.setdefault(name, []).append(value)
            else:
                data = await value.read()
                duration_s = _wav_duration_s(data)
                fields.setdefault(name, []).append(f"<file {len(data)} bytes>")
        fields["_duration_s"] = [str(duration_s)]
        seen = SeenRequest(request.url.path, dict(request.query_params), dict(request.headers), fields)
        self.requests.append(seen)
        return seen

    async def _answer(self, seen: SeenRequest, request: Request) -> Response:
        failure = self.faults.take_failure()
        if failure is not None:
            retry_after_s = failure.retry_after_s
            response = openai_error(
                f"The server had an error ({SECRET_MARKER})", "server_error", None, failure.status
            )
            if retry_after_s is not None:
                response.headers["retry-after"] = f"{retry_after_s:g}"
            return response
        if self.faults.delay_s:
            await asyncio.sleep(self.faults.delay_s)
        fmt = (seen.fields.get("response_format") or ["json"])[0]
        if fmt not in REST_FORMATS:
            return openai_error(f"invalid response_format {fmt!r}", "invalid_request_error", None, 400)
        duration_s = float(seen.fields["_duration_s"][0])
        text = self.transcript
        if fmt == "text":
            return PlainTextResponse(text + "\n")
        if fmt in ("srt", "vtt"):
            stamp = f"00:00:00{',' if fmt == 'srt' else '.'}000 --> 00:00:0{min(9, int(duration_s))}"
            head = "1\n" if fmt == "srt" else "WEBVTT\n\n"
            return PlainTextResponse(f"{head}{stamp}{',000' if fmt == 'srt' else '.000'}\n{text}\n")
        usage = {"type": "duration", "seconds": round(duration_s)}
        if fmt == "json":
            return JSONResponse({"text": text, "usage": usage})
        words = _spread(text, duration_s)
        body: dict[str, Any] = {
            "task": "transcribe",
            "language": "english",
            "duration": duration_s,
            "text": text,
            "segments": [
                {
                    "id": 0,
                    "seek": 0,
                    "start": 0.0,
                    "end": duration_s,
                    "text": " " + text,
                    "tokens": [50364, 2425],
                    "temperature": 0.0,
                    "avg_logprob": -0.2,
                    "compression_ratio": 1.1,
                    "no_speech_prob": 0.01,
                }
            ],
            "usage": usage,
        }
        if "word" in seen.fields.get("timestamp_granularities[]", []):
            body["words"] = words
        return JSONResponse(body)

    # --- Realtime ---

    async def _openai_socket(self, websocket: WebSocket) -> None:
        beta = "realtime=v1" in websocket.headers.get("openai-beta", "")
        authorized = websocket.headers.get("authorization") == f"Bearer {OPENAI_KEY}"
        await self._serve_socket(websocket, "beta" if beta else "ga", authorized)

    async def _azure_socket(self, websocket: WebSocket) -> None:
        authorized = websocket.headers.get("api-key") == AZURE_KEY
        path = websocket.url.path
        if path == "/openai/realtime" and "api-version" not in websocket.query_params:
            authorized = False
        await self._serve_socket(websocket, "beta" if path == "/openai/realtime" else "ga", authorized)

    async def _serve_socket(self, websocket: WebSocket, dialect: str, authorized: bool) -> None:
        seen = SeenSocket(websocket.url.path, dict(websocket.query_params), dict(websocket.headers), dialect)
        self.sockets.append(seen)
        failure = self.faults.take_failure()
        if not authorized or failure is not None:
            status = failure.status if failure is not None else 401
            message = "Incorrect API key provided" if failure is None else "The server had an error"
            await websocket.send_denial_response(
                openai_error(f"{message} ({SECRET_MARKER})", "invalid_request_error", None, status)
            )
            return
        await websocket.accept()
        session = RealtimeSession(self, websocket, seen)
        closer = None
        if self.faults.close_1011_after_s is not None:
            closer = asyncio.create_task(session.close_1011_after(self.faults.close_1011_after_s))
        try:
            await session.run()
        finally:
            if closer is not None:
                closer.cancel()


def _wav_duration_s(data: bytes) -> float:
    try:
        with wave.open(io.BytesIO(data)) as wav:
            return wav.getnframes() / wav.getframerate()
    except (wave.Error, EOFError):
        return 1.0


def _spread(text: str, duration_s: float) -> list[dict[str, Any]]:
    """The words of `text` spread evenly over the audio."""
    words = text.split()
    step = duration_s / max(1, len(words))
    return [
        {"word": word, "start": round(i * step, 3), "end": round((i + 1) * step, 3)}
        for i, word in enumerate(words)
    ]


_SPEECH_CODECS = {
    "mp3": ("mp3", "libmp3lame"),
    "opus": ("ogg", "libopus"),
    "aac": ("adts", "aac"),
    "flac": ("flac", "flac"),
}


def speech_tone(fmt: str, seconds: float) -> bytes:
    """A soft 440 Hz tone of `seconds` at 24 kHz mono, as OpenAI would send audio in `fmt`."""
    t = np.arange(int(seconds * SPEECH_RATE_HZ)) / SPEECH_RATE_HZ
    pcm = (np.sin(2 * np.pi * 440 * t) * 3000).astype("<i2")
    if fmt == "pcm":
        return pcm.tobytes()
    if fmt == "wav":
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SPEECH_RATE_HZ)
            out.writeframes(pcm.tobytes())
        return buffer.getvalue()
    container_format, codec = _SPEECH_CODECS[fmt]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=SPEECH_RATE_HZ)
        assert isinstance(stream, av.audio.stream.AudioStream)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SPEECH_RATE_HZ
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buffer.getvalue()
