"""The socket shell of a WhisperLiveKit stream: gate slot, connection, paced upload, results.

The server's first message says whether it takes raw PCM (`useAudioWorklet`, its `--pcm-input` mode);
otherwise it decodes a container with ffmpeg, so the PCM goes up behind an open-ended WAV header. An empty
binary frame ends the upload; the server answers `ready_to_stop` once everything is transcribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.base import EngineError, TranscribeOptions, UpstreamError
from earshot.engines.provider_io import connection_lost, open_socket, unreadable_reply
from earshot.engines.result_queue import ResultQueue
from earshot.engines.results import EngineResult, Flushed
from earshot.engines.upstream import closed_error
from earshot.engines.whisperlivekit_server import StreamGate, WhisperLiveKitConfig
from earshot.engines.whisperlivekit_wire import Line, WhisperLiveKitProtocol

log = logging.getLogger(__name__)

PROVIDER = "whisperlivekit"
TICK_S = 0.1


def streaming_wav_header() -> bytes:
    """A 16 kHz mono PCM16 WAV header of unknown length, for a server that decodes through ffmpeg."""
    unknown = 0xFFFFFFFF
    byte_rate = ENGINE_RATE_HZ * 2
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, ENGINE_RATE_HZ, byte_rate, 2, 16)
        + b"data"
        + struct.pack("<I", unknown)
    )


class WhisperLiveKitStream:
    """An EngineStream over one `/asr` connection, holding one slot of the server's gate while open."""

    def __init__(
        self,
        config: WhisperLiveKitConfig,
        options: TranscribeOptions,
        gate_for: Callable[[str, int], StreamGate],
    ) -> None:
        self._config = config
        self._gate_for = gate_for
        self._protocol = WhisperLiveKitProtocol(
            config.max_lead_s, config.finalize_grace_s, options.interim_results
        )
        self._ws: ClientConnection | None = None
        self._gate: StreamGate | None = None
        self._opening = asyncio.Lock()
        self._results = ResultQueue()
        self._tasks: list[asyncio.Task[None]] = []
        self._reported = asyncio.Event()
        self._stopped = asyncio.Event()
        # Set once the server said ready_to_stop or the stream failed: what close() waits for.
        self._finished = asyncio.Event()
        self._closing = False

    async def send(self, audio: Audio) -> None:
        """Send audio up once the server's queue has room for it."""
        self._results.raise_if_failed()
        if self._closing:
            raise EngineError("the stream is closed")
        if not len(audio.samples):
            return
        ws = await self._open()
        seconds = audio.duration_s
        while (wait_s := self._protocol.wait_before_sending_s(seconds, time.monotonic())) > 0:
            self._reported.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reported.wait(), wait_s)
            self._results.raise_if_failed()
        await self._send(ws, audio.pcm16())
        self._protocol.audio_sent(seconds, time.monotonic())

    async def finalize(self) -> None:
        """Flushed once the server has processed everything sent so far (see whisperlivekit_wire.py)."""
        self._results.raise_if_failed()
        if self._ws is None:
            self._results.put(Flushed())
            return
        self._results.put_all(self._protocol.finalize(time.monotonic()))

    async def close(self) -> None:
        """End the upload, wait for `ready_to_stop`, give the last Finals and Flushed, end `results()`."""
        if self._closing:
            return
        self._closing = True
        ws = self._ws
        try:
            if ws is not None and self.error is None:
                await self._send(ws, b"")
                behind_s = self._protocol.sent_s - self._protocol.progress_s(time.monotonic())
                try:
                    await asyncio.wait_for(self._finished.wait(), self._config.timeout_s + behind_s)
                except TimeoutError:
                    late = UpstreamError("the upstream provider did not finish the stream", transient=True)
                    self._fail(late)
                if self.error is None:
                    self._results.put_all(self._protocol.on_stopped())
        except UpstreamError:
            pass  # already reported through results()
        finally:
            for task in self._tasks:
                task.cancel()
            if ws is not None:
                await ws.close()
            self._release()
            self._results.end()

    async def abort(self) -> None:
        """End at once, without waiting for the server: `results()` ends, what was sent is dropped."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        ws, self._ws = self._ws, None
        self._release()
        self._results.end()
        if ws is not None:
            # Nobody waits for this stream's text: drop the connection rather than wait out the server's close
            # (a server finishes what it holds before it answers one).
            ws.transport.abort()

    @property
    def error(self) -> EngineError | None:
        """The error that ended the stream, if one did."""
        return self._results.error

    def results(self) -> AsyncIterator[EngineResult]:
        """Partial, Final and Flushed results in order; raises the UpstreamError that ended the stream."""
        return self._results.results()

    def final_lines(self) -> list[Line]:
        """The server's committed lines after `ready_to_stop` (the whole transcript), for one-shot use."""
        lines = list(self._protocol.lines)
        if self._protocol.buffer:
            end = self._protocol.sent_s
            lines.append(Line(self._protocol.buffer, lines[-1].end if lines else 0.0, end))
        return lines

    async def _open(self) -> ClientConnection:
        async with self._opening:
            if self._ws is not None:
                return self._ws
            gate = self._gate_for(self._config.url, self._config.max_streams)
            await gate.acquire(self._config.gate_wait_s)
            self._gate = gate
            try:
                ws = await open_socket(
                    PROVIDER,
                    self._config.url,
                    headers=self._config.headers,
                    connect_timeout_s=self._config.connect_timeout_s,
                    ping_interval_s=self._config.ping_interval_s,
                    ping_timeout_s=self._config.ping_timeout_s,
                    # After a ping timeout, wait no longer for the stuck server's half of the close.
                    close_timeout_s=min(5.0, self._config.ping_timeout_s or 5.0),
                )
                await self._start_upload(ws)
            except BaseException:
                self._release()
                raise
            self._ws = ws
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._read(ws)), loop.create_task(self._tick())]
            return ws

    async def _start_upload(self, ws: ClientConnection) -> None:
        """Read the server's config message and send a WAV header first unless it takes raw PCM."""
        takes_pcm = False
        try:
            first = await asyncio.wait_for(ws.recv(), self._config.connect_timeout_s)
        except TimeoutError:
            first = None  # servers before the config message always decoded a container
        except ConnectionClosed as e:
            raise connection_lost(PROVIDER, e) from e
        message = _parse(first) if first is not None else {}
        if message.get("type") == "config":
            takes_pcm = bool(message.get("useAudioWorklet"))
        elif message:
            self._results.put_all(self._protocol.on_state(message, time.monotonic()))
        if not takes_pcm:
            await self._send(ws, streaming_wav_header())

    async def _send(self, ws: ClientConnection, data: bytes) -> None:
        try:
            await ws.send(data)
        except ConnectionClosed as e:
            error = connection_lost(PROVIDER, e)
            self._fail(error)
            raise error from e

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                message = _parse(raw)
                if message.get("type") == "ready_to_stop":
                    self._stopped.set()
                    self._finished.set()
                elif message.get("error") or message.get("status") == "error":
                    self._fail(unreadable_reply(PROVIDER, json.dumps(message)))
                elif "lines" in message or "buffer_transcription" in message:
                    self._results.put_all(self._protocol.on_state(message, time.monotonic()))
                    self._reported.set()
        except ConnectionClosed as e:
            if not self._stopped.is_set():
                self._fail(connection_lost(PROVIDER, e))
            return
        if not self._stopped.is_set():
            self._fail(closed_error(PROVIDER, 1000, "closed before ready_to_stop"))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._results.put_all(self._protocol.tick(time.monotonic()))

    def _fail(self, error: UpstreamError) -> None:
        if self._results.fail(error):
            self._reported.set()  # wake a paced send so it sees the failure
            self._finished.set()
        self._release()

    def _release(self) -> None:
        if self._gate is not None:
            self._gate.release()
            self._gate = None


def _parse(raw: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}
