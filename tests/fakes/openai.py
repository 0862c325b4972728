"""A fake OpenAI and Azure OpenAI speech service on their real wire protocols, with injectable faults.

REST: `POST /v1/audio/transcriptions` (and `/compat/v1/...` for a custom base URL) with `Authorization:
Bearer`, and Azure's `POST /openai/deployments/{deployment}/audio/transcriptions?api-version=` with `api-key`.
Realtime transcription sockets: `WS /v1/realtime?intent=transcription` (GA, or beta with `OpenAI-Beta:
realtime=v1`), Azure's `WS /openai/realtime?api-version=&deployment=` (beta) and `/openai/v1/realtime` (GA).

It "transcribes" by answering its configured `transcript` for any audio. Faults are set per test:
`fake.faults.fail_next(status=503, times=2)`, `fake.faults.delay_s = 2`,
`fake.faults.close_1011_after_s = 0.5`.
Error bodies carry SECRET_MARKER so tests can check that earshot never passes them on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import uuid
import wave
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.fakes.upstream_faults import Faults

SECRET_MARKER = "upstream-secret-detail-7f3a"
OPENAI_KEY = "sk-fake-openai-key-5b2e9c"
AZURE_KEY = "azure-fake-key-81d4f0"
AZURE_DEPLOYMENT = "my-transcribe"
REST_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
SPEECH_RMS = 300.0


@dataclass
class SeenRequest:
    """One REST request as the fake received it."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    fields: dict[str, list[str]]


@dataclass
class SeenSocket:
    """One realtime socket: its handshake and every client event it received."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    dialect: str
    events: list[dict[str, Any]] = field(default_factory=list)
    appended_bytes: int = 0

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("type") == kind]


def openai_error(message: str, kind: str, code: str | None, status: int) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


class FakeOpenAI:
    """The ASGI app and what it saw; `transcript` is what every recognition answers."""

    def __init__(self, transcript: str = "hello from the fake provider") -> None:
        self.transcript = transcript
        self.faults = Faults()
        self.requests: list[SeenRequest] = []
        self.sockets: list[SeenSocket] = []
        self.app = Starlette(
            routes=[
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
            return openai_error(
                f"Incorrect API key provided ({SECRET_MARKER})",
                "invalid_request_error",
                "invalid_api_key",
                401,
            )
        return await self._answer(seen, request)

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
        session = _FakeSession(self, websocket, seen)
        closer = None
        if self.faults.close_1011_after_s is not None:
            closer = asyncio.create_task(session.close_1011_after(self.faults.close_1011_after_s))
        try:
            await session.run()
        finally:
            if closer is not None:
                closer.cancel()


class _FakeSession:
    """One transcription session: buffer, manual commits or a simple energy VAD, transcripts."""

    def __init__(self, fake: FakeOpenAI, websocket: WebSocket, seen: SeenSocket) -> None:
        self.fake = fake
        self.ws = websocket
        self.seen = seen
        self.dialect = seen.dialect
        self.model = "gpt-4o-transcribe"
        self.encoding = "pcm16"
        self.turn_detection: dict[str, Any] | None = {"type": "server_vad", "silence_duration_ms": 500}
        self.buffer_ms = 0.0
        self.total_ms = 0.0
        self.speech_start_ms: float | None = None
        self.silence_ms = 0.0
        self.previous: str | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.send_lock = asyncio.Lock()

    async def run(self) -> None:
        prefix = "transcription_session" if self.dialect == "beta" else "session"
        await self.send({"type": f"{prefix}.created", "session": self.session_object()})
        try:
            while True:
                event = json.loads(await self.ws.receive_text())
                self.seen.events.append(event)
                await self.on_event(event)
        except WebSocketDisconnect:
            pass
        finally:
            for task in self.tasks:
                task.cancel()

    async def close_1011_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        with contextlib.suppress(RuntimeError, OSError):
            await self.ws.close(1011, "internal server error")

    async def send(self, event: dict[str, Any]) -> None:
        payload = {"event_id": f"event_{uuid.uuid4().hex[:20]}", **event}
        async with self.send_lock:
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await self.ws.send_text(json.dumps(payload))

    async def error(self, code: str, message: str, kind: str = "invalid_request_error") -> None:
        details = {"type": kind, "code": code, "message": message, "param": None, "event_id": None}
        await self.send({"type": "error", "error": details})

    def session_object(self) -> dict[str, Any]:
        transcription = {"model": self.model, "language": None, "prompt": ""}
        if self.dialect == "beta":
            return {
                "id": "sess_fake",
                "object": "realtime.transcription_session",
                "input_audio_format": self.encoding,
                "input_audio_transcription": transcription,
                "turn_detection": self.turn_detection,
            }
        return {
            "type": "transcription",
            "id": "sess_fake",
            "object": "realtime.transcription_session",
            "audio": {"input": {"transcription": transcription, "turn_detection": self.turn_detection}},
        }

    async def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in ("session.update", "transcription_session.update"):
            await self.update(kind, event.get("session") or {})
        elif kind == "input_audio_buffer.append":
            await self.append(base64.b64decode(event.get("audio", "")))
        elif kind == "input_audio_buffer.commit":
            if self.buffer_ms < 100:
                await self.error("input_audio_buffer_commit_empty", "buffer too small")
            else:
                await self.commit()
        elif kind == "input_audio_buffer.clear":
            self.buffer_ms = 0.0
            self.speech_start_ms = None
            await self.send({"type": "input_audio_buffer.cleared"})
        else:
            await self.error("unknown_event_type", f"Invalid value: '{kind}'")

    async def update(self, kind: str, session: dict[str, Any]) -> None:
        wanted = "transcription_session.update" if self.dialect == "beta" else "session.update"
        if kind != wanted:
            await self.error("invalid_request_error", f"{kind} is not supported in this API version")
            return
        if self.dialect == "beta":
            transcription = session.get("input_audio_transcription") or {}
            self.encoding = session.get("input_audio_format", self.encoding)
        else:
            audio_input = (session.get("audio") or {}).get("input") or {}
            transcription = audio_input.get("transcription") or {}
            fmt = (audio_input.get("format") or {}).get("type", "audio/pcm")
            self.encoding = {"audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}.get(fmt, "pcm16")
            session = audio_input
        self.model = transcription.get("model", self.model)
        if "turn_detection" in session:
            self.turn_detection = session["turn_detection"]
        prefix = "transcription_session" if self.dialect == "beta" else "session"
        await self.send({"type": f"{prefix}.updated", "session": self.session_object()})

    async def append(self, data: bytes) -> None:
        self.seen.appended_bytes += len(data)
        if self.encoding == "pcm16":
            added_ms = len(data) / 2 / 24
            loud = (
                len(data) >= 2
                and float(
                    np.sqrt(np.mean(np.frombuffer(data[: len(data) // 2 * 2], "<i2").astype(np.float64) ** 2))
                )
                > SPEECH_RMS
            )
        else:
            added_ms = len(data) / 8
            loud = True
        self.buffer_ms += added_ms
        self.total_ms += added_ms
        if self.turn_detection is None:
            return
        silence_ms = float(self.turn_detection.get("silence_duration_ms") or 500)
        if loud:
            self.silence_ms = 0.0
            if self.speech_start_ms is None:
                self.speech_start_ms = self.total_ms - added_ms
                await self.send(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": int(self.speech_start_ms),
                        "item_id": "pending",
                    }
                )
        elif self.speech_start_ms is not None:
            self.silence_ms += added_ms
            if self.silence_ms >= silence_ms:
                await self.send(
                    {
                        "type": "input_audio_buffer.speech_stopped",
                        "audio_end_ms": int(self.total_ms),
                        "item_id": "pending",
                    }
                )
                self.speech_start_ms = None
                await self.commit()

    async def commit(self) -> None:
        item_id = f"item_{uuid.uuid4().hex[:20]}"
        seconds = self.buffer_ms / 1000
        self.buffer_ms = 0.0
        await self.send(
            {"type": "input_audio_buffer.committed", "previous_item_id": self.previous, "item_id": item_id}
        )
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        created = "conversation.item.created" if self.dialect == "beta" else "conversation.item.added"
        await self.send({"type": created, "previous_item_id": self.previous, "item": item})
        self.previous = item_id
        task = asyncio.create_task(self.transcribe(item_id, seconds))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def transcribe(self, item_id: str, seconds: float) -> None:
        if self.fake.faults.delay_s:
            await asyncio.sleep(self.fake.faults.delay_s)
        if self.fake.faults.server_error_events:
            await self.error("server_error", f"The server had an error ({SECRET_MARKER})", "server_error")
            return
        words = self.fake.transcript.split()
        for index, word in enumerate(words):
            delta = word if index == 0 else " " + word
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item_id,
                    "content_index": 0,
                    "delta": delta,
                }
            )
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": self.fake.transcript,
                "usage": {"type": "duration", "seconds": round(seconds, 3)},
            }
        )


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
