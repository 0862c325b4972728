"""Raw audio frames: the same bytes are the same audio and the same billed milliseconds on every live path."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from earshot.api.deepgram.params import ListenParams
from earshot.api.deepgram.protocol import DeepgramLiveProtocol
from earshot.api.deepgram.results import ModelInfo
from earshot.api.live.actions import Action, AppendAudio
from earshot.api.managed import wire
from earshot.api.managed.protocol import ManagedProtocol
from earshot.api.realtime.protocol import RealtimeProtocol
from earshot.api.realtime.session import RealtimeSettings
from earshot.audio.pcm import float_to_pcm16, ulaw_to_pcm16
from earshot.audio.raw import RawAudioReader, RawFormat
from earshot.streaming.live_config import LiveConfig

RATE_HZ = 24_000
# Message sizes that end mid-frame again and again, as a client cutting a byte stream anywhere would send.
ODD_SPLITS = (1, 3, 7, 480, 1001)


def speech_like(seconds: float, rate_hz: int = RATE_HZ) -> bytes:
    """PCM16 of a wobbling tone (any audio would do; every sample differs from its neighbours)."""
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    return float_to_pcm16(0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(3 * t))))


def cut(data: bytes, sizes: tuple[int, ...]) -> list[bytes]:
    """`data` in messages of the given sizes, cycling through them."""
    pieces, start, index = [], 0, 0
    while start < len(data):
        size = sizes[index % len(sizes)]
        pieces.append(data[start : start + size])
        start, index = start + size, index + 1
    return pieces


def appended(actions: list[Action]) -> bytes:
    return b"".join(action.pcm16 for action in actions if isinstance(action, AppendAudio))


def test_a_frame_split_across_messages_is_joined_and_counted_once() -> None:
    audio = speech_like(0.5)
    reader = RawAudioReader(RawFormat(rate_hz=RATE_HZ))
    assert b"".join(reader.read(piece) for piece in cut(audio, ODD_SPLITS)) == audio
    assert reader.ms_read == 500.0


def test_a_trailing_partial_frame_is_neither_audio_nor_billed() -> None:
    reader = RawAudioReader(RawFormat(rate_hz=8_000, channels=2))
    assert reader.read(b"\x01\x00\x03\x00\x05") == b"\x02\x00"
    assert reader.ms_read == 0.125


def test_g711_and_channels_become_mono_pcm16() -> None:
    codes = bytes(range(256))
    mulaw = RawAudioReader(RawFormat(rate_hz=8_000, encoding="mulaw"))
    assert mulaw.read(codes) == ulaw_to_pcm16(codes)
    stereo = RawAudioReader(RawFormat(rate_hz=16_000, channels=2))
    left, right = np.array([1000, -2000], "<i2"), np.array([3000, 2000], "<i2")
    interleaved = np.stack([left, right], axis=1).tobytes()
    assert np.frombuffer(stereo.read(interleaved), "<i2").tolist() == [2000, 0]


def realtime_audio(pieces: list[bytes]) -> tuple[bytes, float]:
    protocol = RealtimeProtocol(
        RealtimeSettings(id="sess", model="m", vad=None), "ga", lambda model: model, LiveConfig()
    )
    actions: list[Action] = []
    for piece in pieces:
        event = {"type": "input_audio_buffer.append", "audio": base64.b64encode(piece).decode()}
        actions += protocol.receive_text(json.dumps(event))
    return appended(actions), protocol.appended_ms


def deepgram_audio(pieces: list[bytes]) -> tuple[bytes, float]:
    query = {"encoding": "linear16", "sample_rate": str(RATE_HZ)}
    params = ListenParams.from_query(query, {name: [value] for name, value in query.items()})
    protocol = DeepgramLiveProtocol(params, ModelInfo("m", "m"), LiveConfig(), "req")
    actions = [action for piece in pieces for action in protocol.receive_bytes(piece)]
    return appended(actions), protocol.duration_s * 1000


def managed_audio(pieces: list[bytes]) -> tuple[bytes, float]:
    protocol = ManagedProtocol(wire.StreamConfig(sample_rate=RATE_HZ), "m", LiveConfig())
    actions = [action for piece in pieces for action in protocol.receive_bytes(piece)]
    return appended(actions), protocol.seconds_used * 1000


@pytest.mark.parametrize("sizes", [ODD_SPLITS, (4801,), (2,)])
def test_every_live_protocol_hears_and_bills_the_same_bytes_alike(sizes: tuple[int, ...]) -> None:
    audio = speech_like(0.3) + b"\x7f"  # and one stray byte at the very end, which is not a frame
    whole = audio[:-1]
    for path in (realtime_audio, deepgram_audio, managed_audio):
        heard, billed_ms = path(cut(audio, sizes))
        assert heard == whole, path.__name__
        assert billed_ms == pytest.approx(300.0), path.__name__
