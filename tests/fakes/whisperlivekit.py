"""A fake WhisperLiveKit server: `WS /asr` as WhisperLiveKit's basic_server speaks it.

On connect it sends `{"type": "config", "useAudioWorklet": <pcm_input>}`; then it takes binary audio (raw
PCM16 at 16 kHz with pcm_input, else a WAV stream) into a bounded queue and processes it at real-time pace,
sending the whole transcript state (committed `lines` with "H:MM:SS" times, `buffer_transcription`,
`remaining_time_transcription` = wall time since the first audio minus audio processed) whenever it changes.
An empty binary frame ends the upload: the rest is processed and committed, and `{"type": "ready_to_stop"}`
follows. It "transcribes" by reading out a script, word i spanning [i, i + 1) * seconds_per_word; words
are committed `commit_delay_s` after they were heard, and sit in the buffer until then.

A client sending more than `max_queue_s` ahead of processing overflows the queue: the server stops
answering pings for `stall_s` (its event loop is stuck, as a drowning server's is) and closes with 1011.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.fakes.upstream_faults import Faults

RATE_HZ = 16_000
WAV_HEADER_BYTES = 44


@dataclass
class ConnectionLog:
    """What one `/asr` connection did, for tests to inspect."""

    audio_s: float = 0.0
    most_queued_s: float = 0.0
    overflowed: bool = False
    finished: bool = False
    close_code: int | None = None


class _Connection:
    def __init__(self, log: ConnectionLog) -> None:
        self.log = log
        self.received = 0  # samples
        self.processed = 0.0  # samples
        self.first_audio_at: float | None = None
        self.stopping = False
        self.disconnected = False
        self.header_pending = True
        self.wake = asyncio.Event()


class WhisperLiveKitFake:
    """The fake's settings, faults and connection logs, and its ASGI app (`.app`)."""

    def __init__(
        self,
        script: str = "hello from the fake whisper live kit",
        seconds_per_word: float = 0.4,
        max_queue_s: float = 4.0,
        commit_delay_s: float = 1.0,
        pcm_input: bool = True,
        stall_s: float = 0.0,
        step_s: float = 0.05,
    ) -> None:
        self.script = script.split()
        self.seconds_per_word = seconds_per_word
        self.max_queue_s = max_queue_s
        self.commit_delay_s = commit_delay_s
        self.pcm_input = pcm_input
        self.stall_s = stall_s
        self.step_s = step_s
        self.faults = Faults()
        self.connections: list[ConnectionLog] = []
        self.active = 0
        self.most_active = 0
        self.base_url = ""  # set by whoever serves the app, for tests' convenience
        self.app = Starlette(routes=[WebSocketRoute("/asr", self._asr)])

    async def _asr(self, websocket: WebSocket) -> None:
        failure = self.faults.take_failure()
        if failure is not None:
            body = JSONResponse({"detail": "Service Unavailable"}, status_code=failure.status)
            await websocket.send_denial_response(body)
            return
        await websocket.accept()
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        log = ConnectionLog()
        self.connections.append(log)
        connection = _Connection(log)
        try:
            await websocket.send_json({"type": "config", "useAudioWorklet": self.pcm_input})
            receiver = asyncio.create_task(self._receive(websocket, connection))
            try:
                await self._process(websocket, connection)
            finally:
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                    await receiver
        except WebSocketDisconnect:
            pass
        finally:
            self.active -= 1

    async def _receive(self, websocket: WebSocket, connection: _Connection) -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                connection.stopping = connection.disconnected = True
                connection.wake.set()
                return
            data = message.get("bytes")
            if data is None:
                continue
            if not data:
                connection.stopping = True
                connection.wake.set()
                continue
            if not self.pcm_input and connection.header_pending:
                data, connection.header_pending = data[WAV_HEADER_BYTES:], False
            if connection.first_audio_at is None:
                connection.first_audio_at = time.monotonic()
            connection.received += len(data) // 2
            connection.log.audio_s = connection.received / RATE_HZ
            queued_s = (connection.received - connection.processed) / RATE_HZ
            connection.log.most_queued_s = max(connection.log.most_queued_s, queued_s)
            if queued_s > self.max_queue_s:
                connection.log.overflowed = True
                if self.stall_s:
                    # The whole server is stuck, as a drowning one is: no pongs, no results.
                    time.sleep(self.stall_s)  # noqa: ASYNC251
                connection.log.close_code = 1011
                connection.stopping = connection.disconnected = True
                connection.wake.set()
                with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                    await websocket.close(1011, "keepalive ping timeout")
                return

    async def _process(self, websocket: WebSocket, connection: _Connection) -> None:
        accepted_at = last_step = time.monotonic()
        last_sent: dict[str, Any] | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connection.wake.wait(), self.step_s)
            connection.wake.clear()
            if connection.log.overflowed:
                return
            now = time.monotonic()
            drop_after_s = self.faults.close_1011_after_s
            if drop_after_s is not None and now - accepted_at >= drop_after_s:
                connection.log.close_code = 1011
                await websocket.close(1011, "fake: internal error")
                return
            # Real-time pace: at most one second of audio processed per second of wall time.
            budget = (now - last_step) * RATE_HZ
            last_step = now
            connection.processed = min(connection.received, connection.processed + budget)
            done = connection.stopping and connection.processed >= connection.received
            state = self._state(connection, now, done)
            if state != last_sent:
                if self.faults.delay_s:
                    await asyncio.sleep(self.faults.delay_s)
                await websocket.send_json(state)
                last_sent = state
            if done:
                connection.log.finished = True
                await websocket.send_json({"type": "ready_to_stop"})
                # The real server keeps the socket until the client closes it.
                while not connection.disconnected:
                    await connection.wake.wait()
                    connection.wake.clear()
                return

    def _state(self, connection: _Connection, now: float, done: bool) -> dict[str, Any]:
        processed_s = connection.processed / RATE_HZ
        heard = [
            (word, i * self.seconds_per_word, (i + 1) * self.seconds_per_word)
            for i, word in enumerate(self.script)
            if (i + 1) * self.seconds_per_word <= processed_s + 1e-6
        ]
        commit_until = processed_s if done else processed_s - self.commit_delay_s
        committed = [word for word in heard if word[2] <= commit_until + 1e-6]
        buffer = [word for word, _, _ in heard[len(committed) :]]
        lines = [
            {
                "speaker": 1,
                "text": " ".join(word for word, _, _ in committed[at : at + 6]),
                "start": _clock(committed[at][1]),
                "end": _clock(committed[min(at + 6, len(committed)) - 1][2]),
            }
            for at in range(0, len(committed), 6)
        ]
        first = connection.first_audio_at
        remaining = 0.0 if first is None else max(0.0, round(now - first - processed_s, 1))
        return {
            "status": "active_transcription" if connection.received else "no_audio_detected",
            "lines": lines,
            "buffer_transcription": " ".join(buffer),
            "buffer_diarization": "",
            "buffer_translation": "",
            "remaining_time_transcription": remaining,
            "remaining_time_diarization": 0.0,
        }


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))
