"""Driving /v1/realtime in end-to-end tests: audio at 24 kHz or in G.711, paced sending, event logs."""

from __future__ import annotations

import asyncio
import base64
import io
import time
import warnings
import wave
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import soxr

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import ENGINE_RATE_HZ, float_to_pcm16
from tests.conftest import shared_audio

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

Payload = TypeVar("Payload", str, bytes)


def speech(relpath: str) -> np.ndarray:
    """A shared clip as float32 samples at 16 kHz."""
    return decode_audio(shared_audio(relpath).read_bytes()).samples


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * ENGINE_RATE_HZ), dtype=np.float32)


def trimmed(samples: np.ndarray, floor: float = 0.02) -> np.ndarray:
    """The samples from the first to the last one louder than `floor` (the speech without its margins)."""
    loud = np.flatnonzero(np.abs(samples) > floor)
    return samples[loud[0] : loud[-1] + 1] if len(loud) else samples


def pcm24(samples: np.ndarray) -> bytes:
    """16 kHz samples as PCM16 at 24 kHz, the OpenAI Realtime input format."""
    return float_to_pcm16(np.asarray(soxr.resample(samples, ENGINE_RATE_HZ, 24_000), dtype=np.float32))


def ulaw8(samples: np.ndarray) -> bytes:
    """16 kHz samples as G.711 μ-law at 8 kHz."""
    pcm = float_to_pcm16(np.asarray(soxr.resample(samples, ENGINE_RATE_HZ, 8_000), dtype=np.float32))
    return audioop.lin2ulaw(pcm, 2)


def alaw8(samples: np.ndarray) -> bytes:
    """16 kHz samples as G.711 A-law at 8 kHz."""
    pcm = float_to_pcm16(np.asarray(soxr.resample(samples, ENGINE_RATE_HZ, 8_000), dtype=np.float32))
    return audioop.lin2alaw(pcm, 2)


def as_wav(pcm: bytes, rate_hz: int = 24_000) -> bytes:
    """PCM16 mono (24 kHz: OpenAI's output audio) as a WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate_hz)
        out.writeframes(pcm)
    return buffer.getvalue()


def chunks(audio: bytes, bytes_per_second: int, chunk_ms: int) -> list[str]:
    """Base64 append payloads of `chunk_ms` each."""
    step = bytes_per_second * chunk_ms // 1000
    step -= step % 2 if bytes_per_second % 2 == 0 else 0
    return [base64.b64encode(audio[i : i + step]).decode() for i in range(0, len(audio), step)]


async def paced(
    payloads: Sequence[Payload], chunk_ms: int, send: Callable[[Payload], Awaitable[None]], speed: float = 1.0
) -> None:
    """Send each payload (`chunk_ms` of audio) at `speed` times real-time pace (never ahead of it)."""
    started = time.monotonic()
    for index, payload in enumerate(payloads):
        await send(payload)
        delay = started + (index + 1) * chunk_ms / 1000 / speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def commit_manually(connection: Any, payloads: list[str], **input_settings: Any) -> None:
    """Over an SDK connection: turn server VAD off, append `payloads` and commit them as one turn."""
    audio_input = {"turn_detection": None, **input_settings}
    await connection.session.update(session={"type": "transcription", "audio": {"input": audio_input}})
    for payload in payloads:
        await connection.input_audio_buffer.append(audio=payload)
    await connection.input_audio_buffer.commit()


async def collect(
    connection: Any, log: EventLog, until_completed: int, timeout_s: float, stop_on_error: bool = False
) -> None:
    """Read SDK events into `log` until that many transcripts completed (or an error, if asked)."""
    async with asyncio.timeout(timeout_s):
        async for event in connection:
            log.add(event.to_dict())
            if len(log.completed) >= until_completed or (stop_on_error and event.type == "error"):
                return


@dataclass
class EventLog:
    """Server events as they arrived, with their arrival times."""

    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def add(self, event: dict[str, Any]) -> None:
        self.events.append((time.monotonic(), event))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event for _, event in self.events if event["type"] == kind]

    def at(self, kind: str, item_id: str) -> float:
        """Arrival time of the first `kind` event for an item."""
        return next(t for t, e in self.events if e["type"] == kind and e.get("item_id") == item_id)

    def deltas(self, item_id: str) -> list[str]:
        kind = "conversation.item.input_audio_transcription.delta"
        return [e["delta"] for e in self.of(kind) if e["item_id"] == item_id]

    @property
    def completed(self) -> list[dict[str, Any]]:
        return self.of("conversation.item.input_audio_transcription.completed")
