"""Deepgram live streams: `DeepgramLive` (the protocol, no I/O) and `DeepgramStream` (its socket shell).

Audio goes up as linear16 at 16 kHz. Deepgram's `is_final` Results become Finals and its interim Results
Partials. A finalize sends `{"type": "Finalize"}`; its Flushed comes with the first final result marked
`from_finalize` or reaching the audio sent before it, or after `finalize_timeout_s` if Deepgram had nothing
left to say. Close sends `CloseStream` and waits for Deepgram's Metadata and close. A stream without audio
for `keepalive_s` sends a KeepAlive, since Deepgram closes one that is silent for 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.base import EngineError, TranscribeOptions, UpstreamError
from earshot.engines.deepgram_wire import PROVIDER, DeepgramConfig, parse_message, words_of
from earshot.engines.provider_io import connection_lost, open_socket
from earshot.engines.result_queue import ResultQueue
from earshot.engines.results import EngineResult, Final, Flushed, Partial
from earshot.engines.upstream import closed_error

log = logging.getLogger(__name__)

# A final result ending this close to the audio sent before a finalize covers it (Deepgram rounds times).
COVER_TOLERANCE_S = 0.05
TICK_S = 0.1


@dataclass(slots=True)
class _PendingFlush:
    until_s: float
    deadline: float


class DeepgramLive:
    """The client side of Deepgram's live protocol, fed what happened and returning what to send and emit.

    Times passed in are the caller's clock (`time.monotonic()` in the shell); result times are seconds of
    audio sent on this stream.
    """

    def __init__(self, keepalive_s: float, finalize_timeout_s: float, interim_results: bool) -> None:
        self.keepalive_s = keepalive_s
        self.finalize_timeout_s = finalize_timeout_s
        self.interim_results = interim_results
        self.sent_s = 0.0
        self.final_until_s = 0.0
        self._pending: deque[_PendingFlush] = deque()
        self._last_sent_at: float | None = None

    def audio_sent(self, seconds: float, now: float) -> None:
        """Audio of this length went up."""
        self.sent_s += seconds
        self._last_sent_at = now

    def finalize(self, now: float) -> tuple[list[dict[str, Any]], list[EngineResult]]:
        """Messages to send and results to emit for a finalize."""
        if not self._pending and self.final_until_s >= self.sent_s - COVER_TOLERANCE_S:
            return [], [Flushed()]  # every word sent so far is already final
        nothing_new = bool(self._pending) and self._pending[-1].until_s >= self.sent_s - COVER_TOLERANCE_S
        self._pending.append(_PendingFlush(self.sent_s, now + self.finalize_timeout_s))
        if nothing_new:
            return [], []  # flushed together with the finalize already on its way
        self._last_sent_at = now
        return [{"type": "Finalize"}], []

    def on_message(self, message: dict[str, Any]) -> list[EngineResult]:
        """Results to emit for one server message."""
        if message.get("type") != "Results":
            return []  # Metadata, SpeechStarted and UtteranceEnd carry nothing a stream reports
        alternatives = (message.get("channel") or {}).get("alternatives") or [{}]
        alternative = alternatives[0]
        text = str(alternative.get("transcript", "")).strip()
        start = float(message.get("start", 0.0))
        end = start + float(message.get("duration", 0.0))
        if not message.get("is_final"):
            return [Partial(text, start, end)] if self.interim_results and text else []
        results: list[EngineResult] = []
        if text:
            raw_words = alternative.get("words") or [{}]
            speaker = raw_words[0].get("speaker") if isinstance(raw_words[0], dict) else None
            speaker_id = int(speaker) if speaker is not None else None
            results.append(Final(text, start, end, words_of(alternative), speaker_id))
        self.final_until_s = max(self.final_until_s, end)
        if message.get("from_finalize") and self._pending:
            self._pending.popleft()
            results.append(Flushed())
        while self._pending and self.final_until_s >= self._pending[0].until_s - COVER_TOLERANCE_S:
            self._pending.popleft()
            results.append(Flushed())
        return results

    def tick(self, now: float) -> tuple[list[dict[str, Any]], list[EngineResult]]:
        """Messages and results due by `now`: a KeepAlive when idle, Flushed for finalizes that timed out."""
        outgoing: list[dict[str, Any]] = []
        if self._last_sent_at is not None and now - self._last_sent_at >= self.keepalive_s:
            outgoing.append({"type": "KeepAlive"})
            self._last_sent_at = now
        results: list[EngineResult] = []
        while self._pending and now >= self._pending[0].deadline:
            self._pending.popleft()
            log.debug("deepgram sent no from_finalize result in time; flushing anyway")
            results.append(Flushed())
        return outgoing, results

    def closed(self) -> list[EngineResult]:
        """Results to emit once Deepgram has closed the stream after CloseStream: the outstanding flushes."""
        flushes: list[EngineResult] = [Flushed() for _ in self._pending]
        self._pending.clear()
        return flushes


class DeepgramStream:
    """An EngineStream over Deepgram's live WebSocket."""

    def __init__(self, config: DeepgramConfig, options: TranscribeOptions) -> None:
        self._config = config
        self._options = options
        self._protocol = DeepgramLive(config.keepalive_s, config.finalize_timeout_s, options.interim_results)
        self._ws: ClientConnection | None = None
        self._opening = asyncio.Lock()
        self._results = ResultQueue()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    @property
    def url(self) -> str:
        """The live URL with this stream's query parameters."""
        params = self._config.params(
            self._options,
            encoding="linear16",
            sample_rate=str(ENGINE_RATE_HZ),
            channels="1",
            interim_results="true" if self._options.interim_results else "false",
        )
        return f"{self._config.live_url}?{urlencode(params)}"

    async def send(self, audio: Audio) -> None:
        """Send audio up, opening the socket first if this is the first."""
        self._results.raise_if_failed()
        if self._closing:
            raise EngineError("the stream is closed")
        if not len(audio.samples):
            return
        ws = await self._open()
        await self._send(ws, audio.pcm16())
        self._protocol.audio_sent(audio.duration_s, time.monotonic())

    async def finalize(self) -> None:
        """Ask Deepgram for the finals of everything sent; Flushed follows them."""
        self._results.raise_if_failed()
        if self._ws is None:
            self._results.put(Flushed())
            return
        outgoing, results = self._protocol.finalize(time.monotonic())
        await self._send_all(self._ws, outgoing)
        self._results.put_all(results)

    async def close(self) -> None:
        """CloseStream, wait for Deepgram's last finals and its close, then end `results()`."""
        if self._closing:
            return
        self._closing = True
        ws = self._ws
        try:
            if ws is not None and self._results.error is None:
                with contextlib.suppress(UpstreamError):
                    await self._send_all(ws, [{"type": "CloseStream"}])
                reader = self._tasks[0]
                try:
                    await asyncio.wait_for(asyncio.shield(reader), self._config.timeout_s)
                except TimeoutError:
                    ended = "the upstream provider did not finish the stream"
                    self._results.fail(UpstreamError(ended, transient=True, status=504))
        finally:
            for task in self._tasks:
                task.cancel()
            if ws is not None:
                await ws.close()
            self._results.end()

    def results(self) -> AsyncIterator[EngineResult]:
        """Partial, Final and Flushed results in order; raises the UpstreamError that ended the stream."""
        return self._results.results()

    async def _open(self) -> ClientConnection:
        async with self._opening:
            if self._ws is None:
                self._ws = await open_socket(
                    PROVIDER,
                    self.url,
                    headers=self._config.headers,
                    connect_timeout_s=self._config.connect_timeout_s,
                )
                loop = asyncio.get_running_loop()
                self._tasks = [loop.create_task(self._read(self._ws)), loop.create_task(self._tick(self._ws))]
            return self._ws

    async def _send(self, ws: ClientConnection, data: bytes | str) -> None:
        try:
            await ws.send(data)
        except ConnectionClosed as e:
            error = connection_lost(PROVIDER, e)
            self._results.fail(error)
            raise error from e

    async def _send_all(self, ws: ClientConnection, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            await self._send(ws, _json(message))

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                self._results.put_all(self._protocol.on_message(parse_message(raw)))
        except ConnectionClosed as e:
            self._results.fail(connection_lost(PROVIDER, e))
            return
        if not self._closing:
            # Deepgram closed normally without being asked to (e.g. after its own error message).
            self._results.fail(connection_lost_normal())
            return
        self._results.put_all(self._protocol.closed())

    async def _tick(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            outgoing, results = self._protocol.tick(time.monotonic())
            self._results.put_all(results)
            with contextlib.suppress(UpstreamError):
                await self._send_all(ws, outgoing)


def connection_lost_normal() -> UpstreamError:
    """The error for a socket Deepgram closed normally while earshot still had audio to send."""
    return closed_error(PROVIDER, 1000, "closed without CloseStream")


def _json(message: dict[str, Any]) -> str:
    return json.dumps(message)
