"""Streaming through a provider's Realtime transcription socket (OpenAI, Azure), in its beta or GA dialect.

`RealtimeUpstreamStream` is an EngineStream: audio goes up as 24 kHz PCM16 appends with turn detection off,
each `finalize()` commits the buffer, and the item's `.completed` transcript comes back as one Final then
Flushed (`.delta`s as Partials when wanted). The helpers here are shared with the `/v1/realtime` relay.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import soxr
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio, float_to_pcm16
from earshot.engines.base import EngineError, TranscribeOptions, UpstreamError, base_language
from earshot.engines.provider_io import open_socket
from earshot.engines.result_queue import ResultQueue
from earshot.engines.results import EngineResult, Final, Flushed, Partial
from earshot.engines.upstream import closed_error, reference, transport_error

log = logging.getLogger(__name__)

UPSTREAM_RATE_HZ = 24_000
MIN_COMMIT_S = 0.1
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
GA_FORMAT_TYPES = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}

RealtimeDialect = Literal["beta", "ga"]


@dataclass(frozen=True, slots=True)
class RealtimeTarget:
    """A provider's Realtime transcription socket: URL, headers, dialect and the model name it knows."""

    provider: str
    url: str
    headers: dict[str, str]
    dialect: RealtimeDialect
    model: str
    connect_timeout_s: float
    timeout_s: float


def session_update(
    dialect: RealtimeDialect,
    model: str,
    *,
    encoding: str = "pcm16",
    rate_hz: int = UPSTREAM_RATE_HZ,
    language: str | None = None,
    prompt: str | None = None,
    turn_detection: dict[str, Any] | None = None,
    noise_reduction: dict[str, Any] | None = None,
    include: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The `transcription_session.update` (beta) or `session.update` (GA) that sets up a session."""
    transcription: dict[str, Any] = {"model": model}
    if language:
        transcription["language"] = base_language(language)
    if prompt:
        transcription["prompt"] = prompt
    if dialect == "beta":
        session: dict[str, Any] = {
            "input_audio_format": encoding,
            "input_audio_transcription": transcription,
            "turn_detection": turn_detection,
        }
        if noise_reduction is not None:
            session["input_audio_noise_reduction"] = noise_reduction
        if include:
            session["include"] = list(include)
        return {"type": "transcription_session.update", "session": session}
    audio_format: dict[str, Any] = {"type": GA_FORMAT_TYPES[encoding]}
    if encoding == "pcm16":
        audio_format["rate"] = rate_hz
    audio_input: dict[str, Any] = {
        "format": audio_format,
        "transcription": transcription,
        "turn_detection": turn_detection,
    }
    if noise_reduction is not None:
        audio_input["noise_reduction"] = noise_reduction
    ga_session: dict[str, Any] = {"type": "transcription", "audio": {"input": audio_input}}
    if include:
        ga_session["include"] = list(include)
    return {"type": "session.update", "session": ga_session}


async def connect(target: RealtimeTarget) -> ClientConnection:
    """Open the upstream socket; failures become UpstreamErrors without the URL or key in them."""
    return await open_socket(
        target.provider,
        target.url,
        headers=target.headers,
        connect_timeout_s=target.connect_timeout_s,
        close_timeout_s=10.0,
        max_message_bytes=MAX_MESSAGE_BYTES,
        trust_env=True,
    )


def error_event_failure(provider: str, event: dict[str, Any]) -> UpstreamError:
    """The UpstreamError for an upstream `error` or `.failed` event (its text is logged at DEBUG only)."""
    ref = reference()
    log.debug("upstream %s sent an error event (ref %s): %s", provider, ref, json.dumps(event)[:2000])
    details = event.get("error")
    kind = details.get("type") if isinstance(details, dict) else None
    transient = kind in (None, "server_error", "transcription_failed")
    what = "failed" if transient else "rejected the stream"
    return UpstreamError(f"the upstream provider {what} (ref {ref})", transient=transient, status=502)


@dataclass(slots=True)
class _Turn:
    """One finalize: the audio it covers and, once committed upstream, the item that transcribes it."""

    start_s: float
    end_s: float
    awaiting: bool = False
    item_id: str | None = None
    text: str = ""
    timer: asyncio.TimerHandle | None = None


class RealtimeUpstreamStream:
    """An EngineStream through a provider's Realtime transcription socket, committing on each finalize."""

    def __init__(self, target: RealtimeTarget, options: TranscribeOptions) -> None:
        self._target = target
        self._options = options
        self._ws: ClientConnection | None = None
        self._connecting = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._results = ResultQueue()
        self._resampler = soxr.ResampleStream(ENGINE_RATE_HZ, UPSTREAM_RATE_HZ, 1, dtype="float32")
        self._turns: deque[_Turn] = deque()
        self._drained = asyncio.Event()
        self._buffered_s = 0.0
        self._sent_s = 0.0
        self._turn_start_s = 0.0
        self._closed = False
        self._closing = False

    async def send(self, audio: Audio) -> None:
        """Append the audio upstream as 24 kHz PCM16."""
        if self._closed:
            raise EngineError("the stream is closed")
        self._results.raise_if_failed()
        if not len(audio.samples):
            return
        await self._open()
        await self._append(self._resampler.resample_chunk(audio.samples))
        self._buffered_s += audio.duration_s
        self._sent_s += audio.duration_s

    async def finalize(self) -> None:
        """Commit what was appended; its transcript comes back as a Final, then Flushed."""
        if self._closed:
            return
        self._results.raise_if_failed()
        await self._finalize()
        self._results.raise_if_failed()

    async def close(self) -> None:
        """Finalize, wait for the last transcript, then close the socket and end `results()`."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._results.error is None:
                await self._finalize()
                await self._drained.wait()
        finally:
            self._closing = True
            if self._ws is not None:
                await self._ws.close()
            if self._reader is not None:
                await asyncio.gather(self._reader, return_exceptions=True)
            self._results.end()

    def results(self) -> AsyncIterator[EngineResult]:
        """Partial, Final and Flushed results in order; raises the UpstreamError that ended the stream."""
        return self._results.results()

    # --- talking upstream ---

    async def _open(self) -> None:
        async with self._connecting:
            if self._ws is not None:
                return
            ws = await connect(self._target)
            self._ws = ws
            update = session_update(
                self._target.dialect,
                self._target.model,
                language=self._options.language,
                prompt=self._options.prompt,
            )
            self._reader = asyncio.create_task(self._read(ws))
            await self._send(update)

    async def _send(self, event: dict[str, Any]) -> None:
        assert self._ws is not None
        try:
            await self._ws.send(json.dumps(event))
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd is not None else None
            self._fail(closed_error(self._target.provider, code, e.rcvd.reason if e.rcvd else ""))
            self._results.raise_if_failed()

    async def _append(self, resampled: np.ndarray) -> None:
        if len(resampled):
            payload = base64.b64encode(float_to_pcm16(np.asarray(resampled, dtype=np.float32))).decode()
            await self._send({"type": "input_audio_buffer.append", "audio": payload})

    async def _finalize(self) -> None:
        turn = _Turn(self._turn_start_s, self._sent_s)
        if self._ws is not None and self._buffered_s > 0:
            # The resampler holds back a few milliseconds; they belong to this turn.
            await self._append(self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
            self._resampler = soxr.ResampleStream(ENGINE_RATE_HZ, UPSTREAM_RATE_HZ, 1, dtype="float32")
        if self._ws is not None and self._buffered_s >= MIN_COMMIT_S:
            turn.awaiting = True
            turn.timer = asyncio.get_running_loop().call_later(self._target.timeout_s, self._timed_out, turn)
            self._turns.append(turn)
            await self._send({"type": "input_audio_buffer.commit"})
        else:
            if self._ws is not None and self._buffered_s > 0:
                await self._send({"type": "input_audio_buffer.clear"})
            self._turns.append(turn)
        self._buffered_s = 0.0
        self._turn_start_s = self._sent_s
        self._release()

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                try:
                    event = json.loads(raw)
                except ValueError:
                    log.debug("upstream %s sent a frame that is not JSON", self._target.provider)
                    continue
                if isinstance(event, dict):
                    self._on_event(event)
        except ConnectionClosed:
            pass
        if not self._closing:
            self._fail(closed_error(self._target.provider, ws.close_code, ws.close_reason or ""))

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        item_id = event.get("item_id")
        if kind == "input_audio_buffer.committed" and isinstance(item_id, str):
            waiting = next((t for t in self._turns if t.awaiting and t.item_id is None), None)
            if waiting is not None:
                waiting.item_id = item_id
        elif kind == "conversation.item.input_audio_transcription.delta":
            turn = self._turn_of(item_id)
            if turn is not None:
                turn.text += str(event.get("delta") or "")
                if self._options.interim_results and turn is self._turns[0] and turn.text.strip():
                    self._results.put(Partial(turn.text.strip(), turn.start_s, turn.end_s))
        elif kind == "conversation.item.input_audio_transcription.completed":
            turn = self._turn_of(item_id)
            if turn is not None:
                turn.text = str(event.get("transcript") or "")
                turn.awaiting = False
                if turn.timer is not None:
                    turn.timer.cancel()
                self._release()
        elif kind in ("error", "conversation.item.input_audio_transcription.failed"):
            self._fail(error_event_failure(self._target.provider, event))

    def _turn_of(self, item_id: object) -> _Turn | None:
        for turn in self._turns:
            if turn.awaiting and turn.item_id == item_id:
                return turn
        # A provider that skips `committed`: the oldest turn still waiting is the one.
        return next((t for t in self._turns if t.awaiting and t.item_id is None), None)

    def _release(self) -> None:
        while self._turns and not self._turns[0].awaiting:
            turn = self._turns.popleft()
            text = turn.text.strip()
            if text:
                self._results.put(Final(text, turn.start_s, turn.end_s))
            self._results.put(Flushed())
        if not self._turns:
            self._drained.set()
        else:
            self._drained.clear()

    def _timed_out(self, turn: _Turn) -> None:
        if turn.awaiting:
            self._fail(transport_error(self._target.provider, TimeoutError("no transcript in time")))

    def _fail(self, error: EngineError) -> None:
        if self._results.error is not None:
            return
        for turn in self._turns:
            if turn.timer is not None:
                turn.timer.cancel()
        self._turns.clear()
        self._drained.set()
        self._results.fail(error)
