"""Smoke checks of one catalog model, per capability: does its own provider answer, and how fast.

`transcribe` sends one second of audio one-shot; `stream` opens a live stream, sends a second and waits
for the flush; `realtime` on an upstream-realtime provider opens its socket, sets the session up, appends
100 ms of silence and waits for the first server event (on other engines it is the stream check).
Fallbacks are not used: the check is of this model's provider alone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from websockets.exceptions import ConnectionClosed

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio, float_to_pcm16
from earshot.engines.base import Engine, EngineError, TranscribeOptions, UpstreamError, transcribe
from earshot.engines.openai_wire import upstream_realtime_target
from earshot.engines.realtime_upstream import connect, error_event_failure, session_update
from earshot.engines.results import Flushed
from earshot.engines.spec import Capability, ModelSpec
from earshot.engines.upstream import closed_error

CHECK_AUDIO_S = 1.0
REALTIME_APPEND_S = 0.1
REALTIME_RATE_HZ = 24_000


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One capability's check: ok with its latency, or the error a caller would have got."""

    capability: Capability
    ok: bool
    latency_ms: float
    error_code: str | None = None
    error_message: str | None = None

    def as_json(self) -> dict[str, object]:
        """The check as the admin API reports it."""
        reported: dict[str, object] = {
            "capability": self.capability,
            "ok": self.ok,
            "latency_ms": self.latency_ms,
        }
        if not self.ok:
            reported["error"] = {"code": self.error_code, "message": self.error_message}
        return reported


def check_audio() -> Audio:
    """A second of a quiet tone: real samples, nothing for a recogniser to hear."""
    t = np.arange(round(CHECK_AUDIO_S * ENGINE_RATE_HZ)) / ENGINE_RATE_HZ
    return Audio((0.01 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


async def check_model(model_id: str, spec: ModelSpec, engine: Engine) -> list[CheckResult]:
    """Run every capability's check of the model, one after another."""
    checks: dict[Capability, Callable[[], Awaitable[None]]] = {
        "transcribe": lambda: _check_transcribe(engine),
        "stream": lambda: _check_stream(engine),
        "realtime": lambda: _check_realtime(engine),
    }
    results = []
    for capability in spec.capabilities:
        results.append(await _timed(capability, checks[capability], spec.timeout_s + spec.connect_timeout_s))
    return results


async def _timed(capability: Capability, check: Callable[[], Awaitable[None]], limit_s: float) -> CheckResult:
    started = time.perf_counter()

    def elapsed_ms() -> float:
        return round((time.perf_counter() - started) * 1000, 1)

    try:
        await asyncio.wait_for(check(), limit_s)
    except TimeoutError:
        return CheckResult(capability, False, elapsed_ms(), "timeout", f"no answer within {limit_s:g} s")
    except UpstreamError as e:
        return CheckResult(capability, False, elapsed_ms(), "upstream_error", str(e))
    except EngineError as e:
        return CheckResult(capability, False, elapsed_ms(), "engine_error", str(e))
    return CheckResult(capability, True, elapsed_ms())


async def _check_transcribe(engine: Engine) -> None:
    await transcribe(engine, check_audio(), TranscribeOptions())


async def _check_stream(engine: Engine) -> None:
    stream = engine.open_stream(TranscribeOptions(interim_results=False))
    flushed = asyncio.Event()

    async def read() -> None:
        async for result in stream.results():
            if isinstance(result, Flushed):
                flushed.set()

    reader = asyncio.create_task(read())
    try:
        await stream.send(check_audio())
        await stream.finalize()
        waiting = asyncio.create_task(flushed.wait())
        await asyncio.wait({waiting, reader}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if reader.done():
            reader.result()  # raises the stream's failure
        await stream.close()
        await reader
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, EngineError):
            await reader


async def _check_realtime(engine: Engine) -> None:
    target = upstream_realtime_target(engine)
    if target is None:
        await _check_stream(engine)
        return
    socket = await connect(target)
    silence = float_to_pcm16(np.zeros(round(REALTIME_APPEND_S * REALTIME_RATE_HZ), dtype=np.float32))
    append = {"type": "input_audio_buffer.append", "audio": base64.b64encode(silence).decode()}
    try:
        await socket.send(json.dumps(session_update(target.dialect, target.model)))
        await socket.send(json.dumps(append))
        first = json.loads(await socket.recv())
    except ConnectionClosed as e:
        code = e.rcvd.code if e.rcvd is not None else None
        raise closed_error(target.provider, code, e.rcvd.reason if e.rcvd is not None else "") from e
    finally:
        await socket.close()
    if isinstance(first, dict) and first.get("type") == "error":
        raise error_event_failure(target.provider, first)
