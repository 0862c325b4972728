"""The fake OpenAI's Realtime transcription sessions (beta and GA dialects) and what each socket was sent."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

if TYPE_CHECKING:
    from tests.fakes.openai import FakeOpenAI

# Error bodies and events carry this so tests can check that earshot never passes them on.
SECRET_MARKER = "upstream-secret-detail-7f3a"
SPEECH_RMS = 300.0


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


class RealtimeSession:
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
