"""A fake Deepgram: prerecorded `POST /v1/listen` and live `WS /v1/listen`, speaking Deepgram's wire protocol.

It "transcribes" by reading out a script: word i spans [i, i + 1) * seconds_per_word of audio (for a
prerecorded request without seconds_per_word, the script is spread over the whole file). Live, it sends a
final result for every `final_every_s` of audio and, with `interim_results=true`, interim results between;
`Finalize` flushes what is pending as a final marked `from_finalize`; `CloseStream` flushes, sends Metadata
and closes with 1000; a stream with no audio and no KeepAlive for `idle_timeout_s` (10 s, as Deepgram's) is
closed with 1011 and Deepgram's NET-0001 reason. With `utterance_end_ms`, a final ending in quiet audio is
followed by an UtteranceEnd. The key is taken from `Authorization: Token` (or `Bearer`) or from the browser
subprotocols `token`, KEY; wrong keys get Deepgram's 401 body.

With a `recognise` function the fake really listens: live, it sends finals only on `Finalize` and
`CloseStream`, each with the words `recognise` heard in the audio since the previous final.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from tests.fakes.upstream_faults import Failure, Faults

NET_0001 = "Deepgram did not receive audio data or a text message within the timeout window. See https://dpgr.am/net0001"
MODEL_UUID = "1dbdfb4d-85b2-4659-9831-16b3c76229aa"
MODEL_INFO = {"name": "2-general-nova", "version": "2024-01-09.29447", "arch": "nova-3"}
ERROR_BODIES = {
    400: ("Bad Request", "Bad Request: failed to process audio: corrupt or unsupported data"),
    401: ("INVALID_AUTH", "Invalid credentials."),
    402: ("ASR_PAYMENT_REQUIRED", "Project does not have enough credits for an ASR request"),
    429: ("TOO_MANY_REQUESTS", "Too many requests. Please try again later"),
}
# PCM16 mono audio and its sample rate -> the words heard, each (word, start_s, end_s) from the audio's start.
Recogniser = Callable[[bytes, int], list[tuple[str, float, float]]]


def error_response(status: int, retry_after_s: float | None = None) -> JSONResponse:
    """Deepgram's error body for a status."""
    code, message = ERROR_BODIES.get(status, ("INTERNAL_SERVER_ERROR", "Internal server error"))
    headers = {"retry-after": str(retry_after_s)} if retry_after_s is not None else None
    body = {"err_code": code, "err_msg": message, "request_id": str(uuid.uuid4())}
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass
class LiveLog:
    """What one live connection received, for tests to inspect."""

    params: dict[str, str]
    audio_s: float = 0.0
    controls: list[str] = field(default_factory=list)
    close_code: int | None = None


@dataclass
class _Live:
    rate_hz: int
    channels: int
    interim: bool
    heard_samples: int = 0
    final_s: float = 0.0
    interim_s: float = 0.0
    utterance_end: bool = False
    tail: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    pending: bytearray = field(default_factory=bytearray)

    @property
    def heard_s(self) -> float:
        return self.heard_samples / self.rate_hz

    def hear(self, pcm: bytes) -> None:
        samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % (2 * self.channels)], dtype="<i2")
        self.heard_samples += len(samples) // self.channels
        keep = int(0.3 * self.rate_hz) * self.channels
        self.tail = np.concatenate([self.tail, samples.astype(np.float32) / 32768.0])[-keep:]

    def tail_is_quiet(self) -> bool:
        return bool(len(self.tail)) and float(np.sqrt(np.mean(self.tail**2))) < 0.01


class DeepgramFake:
    """The fake's state, its faults, and its ASGI app (`.app`)."""

    def __init__(
        self,
        api_key: str = "dg-test-key",
        script: str = "hello from the fake deepgram",
        seconds_per_word: float | None = None,
        final_every_s: float = 2.0,
        interim_every_s: float = 0.5,
        idle_timeout_s: float = 10.0,
        recognise: Recogniser | None = None,
    ) -> None:
        self.api_key = api_key
        self.script = script.split()
        self.seconds_per_word = seconds_per_word
        self.final_every_s = final_every_s
        self.interim_every_s = interim_every_s
        self.idle_timeout_s = idle_timeout_s
        self.recognise = recognise
        self.faults = Faults()
        self.base_url = ""  # set by whoever serves the app, for tests' convenience
        self.requests: list[dict[str, Any]] = []
        self.live_logs: list[LiveLog] = []
        self.app = Starlette(
            routes=[
                Route("/v1/listen", self._prerecorded, methods=["POST"]),
                WebSocketRoute("/v1/listen", self._live),
            ]
        )

    def _authorized(self, authorization: str | None) -> bool:
        return authorization in (f"Token {self.api_key}", f"Bearer {self.api_key}")

    def _words(self, start_s: float, end_s: float, spw: float) -> list[dict[str, Any]]:
        """Script words whose end lies in (start_s, end_s]."""
        words = []
        for i, word in enumerate(self.script):
            word_start, word_end = i * spw, (i + 1) * spw
            if start_s < word_end <= end_s + 1e-6:
                words.append(
                    {
                        "word": word.lower().strip(".,?!"),
                        "start": round(word_start, 3),
                        "end": round(word_end, 3),
                        "confidence": 0.98,
                        "punctuated_word": word,
                    }
                )
        return words

    # Prerecorded

    async def _prerecorded(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append(
            {"params": dict(request.query_params), "authorization": request.headers.get("authorization")}
        )
        if self.faults.delay_s:
            await asyncio.sleep(self.faults.delay_s)
        failure = self.faults.take_failure()
        if failure is not None:
            return error_response(failure.status, failure.retry_after_s)
        if not self._authorized(request.headers.get("authorization")):
            return error_response(401)
        try:
            with wave.open(io.BytesIO(body)) as wav:
                duration_s = wav.getnframes() / wav.getframerate()
                channels = wav.getnchannels()
        except (wave.Error, EOFError):
            return error_response(400)
        spw = self.seconds_per_word or duration_s / max(1, len(self.script))
        words = self._words(-1.0, duration_s, spw)
        transcript = " ".join(word["punctuated_word"] for word in words)
        results: dict[str, Any] = {
            "channels": [{"alternatives": [{"transcript": transcript, "confidence": 0.98, "words": words}]}]
        }
        if request.query_params.get("utterances") == "true":
            results["utterances"] = [_utterance(words[i : i + 6]) for i in range(0, len(words), 6)]
        metadata = _metadata(body, duration_s, channels)
        return JSONResponse({"metadata": metadata, "results": results})

    # Live

    async def _live(self, websocket: WebSocket) -> None:
        failure: Failure | None = self.faults.take_failure()
        # Browsers cannot set headers: they offer the subprotocols `token` and the key instead.
        offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")]
        by_subprotocol = offered == ["token", self.api_key]
        authorized = by_subprotocol or self._authorized(websocket.headers.get("authorization"))
        if failure is not None or not authorized:
            status = failure.status if failure is not None else 401
            retry_after = failure.retry_after_s if failure is not None else None
            await websocket.send_denial_response(error_response(status, retry_after))
            return
        params = dict(websocket.query_params)
        if params.get("encoding", "linear16") != "linear16":
            await websocket.send_denial_response(error_response(400))
            return
        log = LiveLog(params)
        self.live_logs.append(log)
        state = _Live(
            int(params.get("sample_rate", "16000")),
            int(params.get("channels", "1")),
            params.get("interim_results") == "true",
            utterance_end="utterance_end_ms" in params,
        )
        await websocket.accept(subprotocol="token" if by_subprotocol else None)
        loop = asyncio.get_running_loop()
        drop_at = (
            loop.time() + self.faults.close_1011_after_s
            if self.faults.close_1011_after_s is not None
            else None
        )
        request_id = str(uuid.uuid4())
        while True:
            timeout = self.idle_timeout_s
            if drop_at is not None:
                timeout = min(timeout, max(0.0, drop_at - loop.time()))
            try:
                message = await asyncio.wait_for(websocket.receive(), timeout)
            except TimeoutError:
                dropping = drop_at is not None and loop.time() >= drop_at
                reason = "fake: internal error" if dropping else NET_0001
                log.close_code = 1011
                await websocket.close(1011, reason)
                return
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes"):
                state.hear(message["bytes"])
                log.audio_s = state.heard_s
                drop_after_s = self.faults.close_1011_after_audio_s
                if drop_after_s is not None and state.heard_s >= drop_after_s:
                    log.close_code = 1011
                    await websocket.close(1011, "fake: internal error")
                    return
                if self.recognise is not None:
                    state.pending.extend(message["bytes"])
                    continue
                await self._after_audio(websocket, state, request_id)
                continue
            control = json.loads(message.get("text") or "{}").get("type", "")
            log.controls.append(control)
            if control == "Finalize":
                await self._final(websocket, state, request_id, from_finalize=True)
            elif control == "CloseStream":
                await self._final(websocket, state, request_id, from_finalize=False)
                await websocket.send_json(
                    {
                        "type": "Metadata",
                        "transaction_key": "deprecated",
                        "request_id": request_id,
                        "sha256": hashlib.sha256(b"").hexdigest(),
                        "created": _now(),
                        "duration": round(state.heard_s, 3),
                        "channels": state.channels,
                    }
                )
                log.close_code = 1000
                await websocket.close(1000)
                return

    async def _after_audio(self, websocket: WebSocket, state: _Live, request_id: str) -> None:
        if state.heard_s - state.final_s >= self.final_every_s:
            await self._final(websocket, state, request_id, from_finalize=False)
        elif state.interim and state.heard_s - state.interim_s >= self.interim_every_s:
            state.interim_s = state.heard_s
            await self._send_results(websocket, state, request_id, is_final=False)

    async def _final(self, websocket: WebSocket, state: _Live, request_id: str, from_finalize: bool) -> None:
        if state.heard_s <= state.final_s:
            return  # nothing pending: Deepgram sends no result for an empty flush
        if self.recognise is not None:
            await self._send_recognised(websocket, state, request_id, from_finalize)
        else:
            await self._send_results(websocket, state, request_id, is_final=True, from_finalize=from_finalize)
        if state.utterance_end and state.tail_is_quiet():
            end_s = round(state.heard_s, 3)
            await websocket.send_json({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": end_s})
        state.final_s = state.interim_s = state.heard_s

    async def _send_results(
        self, websocket: WebSocket, state: _Live, request_id: str, is_final: bool, from_finalize: bool = False
    ) -> None:
        spw = self.seconds_per_word or 0.4
        words = self._words(state.final_s, state.heard_s, spw)
        if self.faults.delay_s:
            await asyncio.sleep(self.faults.delay_s)
        speech_final = is_final and state.tail_is_quiet()
        await websocket.send_json(
            _results(state, request_id, words, 0.98, is_final, speech_final, from_finalize)
        )

    async def _send_recognised(
        self, websocket: WebSocket, state: _Live, request_id: str, from_finalize: bool
    ) -> None:
        assert self.recognise is not None
        heard = await asyncio.to_thread(self.recognise, bytes(state.pending), state.rate_hz)
        state.pending.clear()
        words = [
            {
                "word": word.lower(),
                "start": round(state.final_s + start, 3),
                "end": round(state.final_s + end, 3),
                "confidence": 0.9,
                "punctuated_word": word,
            }
            for word, start, end in heard
        ]
        await websocket.send_json(_results(state, request_id, words, 0.9, True, True, from_finalize))


def _results(
    state: _Live,
    request_id: str,
    words: list[dict[str, Any]],
    confidence: float,
    is_final: bool,
    speech_final: bool,
    from_finalize: bool,
) -> dict[str, Any]:
    """A live Results message with `words`, covering the audio heard since the last final."""
    return {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": round(state.heard_s - state.final_s, 3),
        "start": round(state.final_s, 3),
        "is_final": is_final,
        "speech_final": speech_final,
        "from_finalize": from_finalize,
        "channel": {
            "alternatives": [
                {
                    "transcript": " ".join(word["punctuated_word"] for word in words),
                    "confidence": confidence if words else 0.0,
                    "words": words,
                }
            ]
        },
        "metadata": {"request_id": request_id, "model_info": MODEL_INFO, "model_uuid": MODEL_UUID},
    }


def _utterance(words: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "start": words[0]["start"],
        "end": words[-1]["end"],
        "confidence": 0.98,
        "channel": 0,
        "transcript": " ".join(word["punctuated_word"] for word in words),
        "words": words,
        "id": str(uuid.uuid4()),
    }


def _metadata(body: bytes, duration_s: float, channels: int) -> dict[str, Any]:
    return {
        "transaction_key": "deprecated",
        "request_id": str(uuid.uuid4()),
        "sha256": hashlib.sha256(body).hexdigest(),
        "created": _now(),
        "duration": round(duration_s, 3),
        "channels": channels,
        "models": [MODEL_UUID],
        "model_info": {
            MODEL_UUID: {"name": "2-general-nova", "version": "2024-01-09.29447", "arch": "nova-3"}
        },
    }


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
