"""StreamingTranscriber: live transcription of one audio source over a WebSocket, resumed across drops.

It connects and waits until the server is ready (or the socket is open, for Deepgram) before it starts
capturing; captured audio is buffered, so nothing is lost while a dropped connection is re-established. On
a new connection it replays the audio the server had not settled yet (at most `max_replay_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from earshot.client.buffer import AudioBuffer
from earshot.client.deepgram_wire import DEEPGRAM_URL, DeepgramWire
from earshot.client.events import (
    AuthError,
    ConnectError,
    CreditsLow,
    ServerError,
    SessionEnd,
    Summary,
    TranscriberError,
    Transcript,
    UtteranceEnd,
)
from earshot.client.managed_wire import ManagedWire
from earshot.client.sources import AudioSource
from earshot.client.wire import Ready, Settled, Wire, WireEvent

E = TypeVar("E")
Callback = Callable[[E], Any]
# Close codes after which reconnecting with the same settings can't help.
REFUSED_CLOSE_CODES = frozenset({1008, 4400, 4401, 4403})
AUTH_CODES = frozenset({"AUTH_FAILED", "MODEL_NOT_ALLOWED", "INSUFFICIENT_CREDITS"})
SEND_CHUNK_MS = 100


class StreamingTranscriber:
    """Streams a source to a server and reports interim and final text through callbacks."""

    def __init__(
        self,
        wire: Wire,
        source: AudioSource,
        *,
        on_interim: Callback[Transcript] | None = None,
        on_final: Callback[Transcript] | None = None,
        on_utterance_end: Callback[UtteranceEnd] | None = None,
        on_error: Callback[ServerError] | None = None,
        on_credits_low: Callback[CreditsLow] | None = None,
        on_session_end: Callback[SessionEnd] | None = None,
        ready_timeout_s: float = 10.0,
        max_reconnects: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        max_replay_s: float = 30.0,
        keepalive_s: float = 3.0,
        finish_timeout_s: float = 60.0,
    ) -> None:
        if (wire.sample_rate, wire.channels) != (source.sample_rate, source.channels):
            raise ValueError("the wire and the source must agree on sample rate and channels")
        self.wire = wire
        self.source = source
        self.summary = Summary()
        self._callbacks: dict[type, Callback[Any] | None] = {
            CreditsLow: on_credits_low,
            ServerError: on_error,
            SessionEnd: on_session_end,
            UtteranceEnd: on_utterance_end,
        }
        self._on_interim = on_interim
        self._on_final = on_final
        self.ready_timeout_s = ready_timeout_s
        self.max_reconnects = max_reconnects
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.keepalive_s = keepalive_s
        self.finish_timeout_s = finish_timeout_s
        self._frame_bytes = 2 * source.channels
        self._bytes_per_s = source.sample_rate * self._frame_bytes
        self._max_replay_bytes = int(max_replay_s * source.sample_rate) * self._frame_bytes
        self._chunk_bytes = source.sample_rate * SEND_CHUNK_MS // 1000 * self._frame_bytes
        self._buffer = AudioBuffer()
        self._new_audio = asyncio.Event()
        self._capture_task: asyncio.Task[None] | None = None
        self._capture_done = False
        # Byte offsets of the captured stream: where this connection's audio began, how far it was sent,
        # and up to where the server has given every final.
        self._connection_start = 0
        self._sent_until = 0
        self._settled_until = 0
        self._finish_sent = False
        self._session_ended = False
        self._fatal: TranscriberError | None = None

    @classmethod
    def managed(
        cls,
        server_url: str,
        api_key: str,
        source: AudioSource,
        *,
        model: str | None = None,
        language: str | None = None,
        interim_results: bool = True,
        **options: Any,
    ) -> StreamingTranscriber:
        """Transcribe through an earshot server's /ws/transcribe with an earshot key."""
        wire = ManagedWire(
            server_url,
            api_key,
            sample_rate=source.sample_rate,
            channels=source.channels,
            model=model,
            language=language,
            interim_results=interim_results,
        )
        return cls(wire, source, **options)

    @classmethod
    def deepgram(
        cls,
        api_key: str,
        source: AudioSource,
        *,
        base_url: str = DEEPGRAM_URL,
        model: str | None = None,
        language: str | None = None,
        interim_results: bool = True,
        **options: Any,
    ) -> StreamingTranscriber:
        """Bring your own key: Deepgram's live /v1/listen, or any server speaking it at `base_url`."""
        wire = DeepgramWire(
            api_key,
            base_url=base_url,
            sample_rate=source.sample_rate,
            channels=source.channels,
            model=model,
            language=language,
            interim_results=interim_results,
        )
        return cls(wire, source, **options)

    async def run(self) -> Summary:
        """Connect, capture until the source ends (or `stop`), and return once the server has the last word.

        Raises AuthError when the server refuses the key, ConnectError when it can't be reached (at first,
        or again after `max_reconnects` attempts), TranscriberError for other refusals.
        """
        ws = await self._connect()
        self._capture_task = asyncio.create_task(self._capture())
        try:
            while not await self._serve(ws):
                ws = await self._reconnect()
        finally:
            self._capture_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._capture_task
        return self.summary

    def stop(self) -> None:
        """Stop capturing; what was captured is still transcribed before `run` returns (event-loop thread)."""
        if self._capture_task is not None:
            self._capture_task.cancel()
        else:
            self._capture_done = True

    # --- capture ---

    async def _capture(self) -> None:
        try:
            if self._capture_done:
                return
            async for chunk in self.source.chunks():
                self._buffer.append(chunk)
                self.summary.seconds_captured = self._buffer.end / self._bytes_per_s
                self._new_audio.set()
        finally:
            self._capture_done = True
            self._new_audio.set()

    # --- connections ---

    async def _connect(self) -> ClientConnection:
        url = self.wire.url()
        try:
            async with asyncio.timeout(self.ready_timeout_s):
                ws = await websockets.connect(url, additional_headers=self.wire.headers(), max_size=None)
                for text in self.wire.opening():
                    await ws.send(text)
                if not self.wire.ready_on_open:
                    await self._await_ready(ws)
        except InvalidStatus as e:
            status = e.response.status_code
            if status in (401, 402, 403):
                raise AuthError(f"the server refused the key (HTTP {status})") from e
            raise ConnectError(f"the server refused the connection (HTTP {status})") from e
        except TimeoutError as e:
            raise ConnectError(f"the server was not ready within {self.ready_timeout_s:g} s") from e
        except (OSError, InvalidHandshake, InvalidURI) as e:
            raise ConnectError(f"can't connect to {_where(url)}: {e}") from e
        self.summary.connections += 1
        self._finish_sent = self._session_ended = False
        return ws

    async def _await_ready(self, ws: ClientConnection) -> None:
        error: ServerError | None = None
        try:
            async for message in ws:
                for event in self.wire.parse(message) if isinstance(message, str) else []:
                    if isinstance(event, Ready):
                        return
                    if isinstance(event, ServerError):
                        error = event
                        await self._call(self._callbacks[ServerError], event)
        except ConnectionClosed:
            pass
        raise _refusal(error, ws.close_code, ws.close_reason)

    async def _reconnect(self) -> ClientConnection:
        resume = max(self._buffer.start, min(self._settled_until, self._sent_until))
        last: ConnectError | None = None
        for attempt in range(self.max_reconnects):
            await asyncio.sleep(min(self.max_backoff_s, self.backoff_s * 2**attempt))
            try:
                ws = await self._connect()
            except ConnectError as e:
                last = e
                continue
            self._connection_start = self._sent_until = resume
            return ws
        raise ConnectError(f"the connection was lost and {self.max_reconnects} reconnects failed: {last}")

    async def _serve(self, ws: ClientConnection) -> bool:
        """Send audio and handle events until the socket closes; True when the transcription is complete."""
        sender = asyncio.create_task(self._send(ws))
        try:
            async for message in ws:
                if isinstance(message, str):
                    for event in self.wire.parse(message):
                        await self._handle(event)
                if self._fatal is not None:
                    break
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender
            await ws.close()
        if self._fatal is not None:
            raise self._fatal
        if ws.close_code in REFUSED_CLOSE_CODES:
            raise _refusal(None, ws.close_code, ws.close_reason)
        return self._finish_sent and (self._session_ended or ws.close_code == 1000)

    async def _send(self, ws: ClientConnection) -> None:
        while True:
            self._new_audio.clear()
            data = self._buffer.read(self._sent_until, self._chunk_bytes)
            if data:
                await ws.send(data)
                self._sent_until += len(data)
                self._forget_settled()
                continue
            if self._capture_done:
                await ws.send(self.wire.finish())
                self._finish_sent = True
                # The server owes the last finals and its goodbye; one that never sends them is given up on.
                await asyncio.sleep(self.finish_timeout_s)
                self._fatal = TranscriberError(
                    f"the server did not finish within {self.finish_timeout_s:g} s"
                )
                await ws.close()
                return
            try:
                await asyncio.wait_for(self._new_audio.wait(), self.keepalive_s)
            except TimeoutError:
                await ws.send(self.wire.keepalive())

    def _forget_settled(self) -> None:
        keep_from = max(self._settled_until, self._sent_until - self._max_replay_bytes)
        self._buffer.drop_before(min(keep_from, self._sent_until))

    # --- events ---

    async def _handle(self, event: WireEvent) -> None:
        base_s = self._connection_start / self._bytes_per_s
        if isinstance(event, Settled):
            settled = self._connection_start + int(event.until * self.source.sample_rate) * self._frame_bytes
            self._settled_until = max(self._settled_until, min(settled, self._sent_until))
        elif isinstance(event, Transcript):
            shifted = Transcript(event.text, event.is_final, event.start + base_s, event.end + base_s)
            if event.is_final:
                self.summary.finals.append(event.text)
            await self._call(self._on_final if event.is_final else self._on_interim, shifted)
        elif isinstance(event, UtteranceEnd):
            await self._call(self._callbacks[UtteranceEnd], UtteranceEnd(event.end + base_s))
        elif isinstance(event, ServerError | CreditsLow | SessionEnd):
            if isinstance(event, SessionEnd):
                self._session_ended = True
                self.summary.seconds_used += event.seconds_used
            if isinstance(event, ServerError) and event.fatal:
                self._fatal = _refusal(event, None, "")
            await self._call(self._callbacks[type(event)], event)

    @staticmethod
    async def _call(callback: Callback[Any] | None, event: object) -> None:
        if callback is None:
            return
        result = callback(event)
        if inspect.isawaitable(result):
            await result


def _refusal(error: ServerError | None, close_code: int | None, close_reason: str | None) -> TranscriberError:
    """The exception for a server that ended or refused the session on purpose."""
    if error is not None:
        kind = AuthError if error.code in AUTH_CODES else TranscriberError
        return kind(f"{error.code}: {error.message}" if error.message else error.code)
    if close_code in REFUSED_CLOSE_CODES:
        return AuthError(f"the server refused the session (close {close_code}{_reason(close_reason)})")
    if close_code is None:
        return ConnectError("the connection was lost before the server was ready")
    return ConnectError(f"the server closed the connection before it was ready (close {close_code})")


def _reason(reason: str | None) -> str:
    return f": {reason}" if reason else ""


def _where(url: str) -> str:
    """The URL without its query (which may carry settings, never shown in full)."""
    return url.split("?", 1)[0]
