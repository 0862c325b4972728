"""Silero VAD streams: speech probabilities per 32 ms window of live audio, whatever the chunking."""

from __future__ import annotations

import asyncio
from itertools import zip_longest

import numpy as np
import pytest

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import ENGINE_RATE_HZ
from earshot.audio.vad import WINDOW_MS, WINDOW_SAMPLES, SileroModel, VadParams, silero_model_path
from earshot.audio.vad_runner import VadRunner
from earshot.streaming.turns import TurnDetector, TurnEnded, TurnStarted
from tests.conftest import shared_audio

CHUNK_SIZES = [160, 333, 1000, 4800]


def clip_samples(relpath: str) -> np.ndarray:
    """A shared clip as mono float32 at 16 kHz."""
    return decode_audio(shared_audio(relpath).read_bytes()).samples


def feed_in_chunks(samples: np.ndarray, sizes: list[int], seed: int = 0) -> np.ndarray:
    """Probabilities from one new stream fed `samples` in chunks of sizes drawn at random from `sizes`."""
    stream = SileroModel.shared().stream()
    rng = np.random.default_rng(seed)
    out, position = [], 0
    while position < len(samples):
        size = int(rng.choice(sizes))
        out.append(stream.feed(samples[position : position + size]))
        position += size
    return np.concatenate(out)


def trim_to_speech(samples: np.ndarray) -> np.ndarray:
    """The clip from its first to its last 10 ms frame louder than a tenth of its loudest (by RMS)."""
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160)
    rms = np.sqrt((frames**2).mean(axis=1))
    loud = np.flatnonzero(rms > 0.1 * rms.max())
    return samples[loud[0] * 160 : (loud[-1] + 1) * 160]


def test_window_is_32_ms_of_engine_audio() -> None:
    assert WINDOW_SAMPLES * 1000 // ENGINE_RATE_HZ == WINDOW_MS == 32


def test_model_ships_in_the_faster_whisper_wheel() -> None:
    path = silero_model_path()
    assert path.name == "silero_vad_v6.onnx"
    assert path.parent.parent.name == "faster_whisper"
    assert SileroModel.shared() is SileroModel.shared()


def test_silence_and_low_noise_are_not_speech() -> None:
    rng = np.random.default_rng(7)
    three_s = 3 * ENGINE_RATE_HZ
    for samples in (
        np.zeros(three_s, dtype=np.float32),
        (rng.standard_normal(three_s) * 0.002).astype(np.float32),
    ):
        probabilities = SileroModel.shared().stream().feed(samples)
        assert len(probabilities) == three_s // WINDOW_SAMPLES
        assert probabilities.dtype == np.float32
        assert probabilities.max() < 0.1


def test_speech_is_detected_where_it_is() -> None:
    samples = clip_samples("pocketsphinx-testdata/goforward.wav")
    probabilities = SileroModel.shared().stream().feed(samples)
    assert len(probabilities) == len(samples) // WINDOW_SAMPLES
    speech = np.flatnonzero(probabilities > 0.5)
    # "go forward ten meters" runs from about 0.5 s to 2.2 s of the 2.8 s clip.
    assert len(speech) * WINDOW_MS > 1200
    assert 300 <= speech[0] * WINDOW_MS <= 700
    assert 1900 <= (speech[-1] + 1) * WINDOW_MS <= 2500
    assert probabilities[:5].max() < 0.1


def test_short_chunks_return_nothing_until_a_window_completes() -> None:
    samples = clip_samples("pocketsphinx-testdata/goforward.wav")
    stream = SileroModel.shared().stream()
    assert len(stream.feed(samples[:500])) == 0
    assert len(stream.feed(samples[500:511])) == 0
    assert len(stream.feed(samples[511:512])) == 1
    assert len(stream.feed(samples[512 : 512 + 3 * WINDOW_SAMPLES + 10])) == 3
    assert stream.windows_seen == 4


@pytest.mark.parametrize("relpath", ["pocketsphinx-testdata/goforward.wav", "negative/silero_vad_test.wav"])
def test_chunking_does_not_change_probabilities(relpath: str) -> None:
    samples = clip_samples(relpath)
    whole = SileroModel.shared().stream().feed(samples)
    for seed in range(3):
        chunked = feed_in_chunks(samples, CHUNK_SIZES, seed)
        assert len(chunked) == len(whole)
        np.testing.assert_allclose(chunked, whole, atol=1e-5)
    one_window_per_call = feed_in_chunks(samples, [WINDOW_SAMPLES])
    np.testing.assert_allclose(one_window_per_call, whole, atol=1e-5)


def test_matches_faster_whispers_own_silero_run() -> None:
    from faster_whisper.vad import SileroVADModel

    samples = clip_samples("pocketsphinx-testdata/goforward.wav")
    usable = samples[: len(samples) // WINDOW_SAMPLES * WINDOW_SAMPLES]
    reference = SileroVADModel(str(silero_model_path()))(usable.copy()).reshape(-1)
    ours = feed_in_chunks(samples, CHUNK_SIZES)
    # faster-whisper zeroes the last 64 samples of its input before the last window, so skip that one.
    np.testing.assert_allclose(ours[:-1], reference[:-1], atol=1e-5)


def test_interleaved_streams_keep_their_own_state() -> None:
    speech = clip_samples("pocketsphinx-testdata/goforward.wav")
    other = clip_samples("speechbrain/spk1_snt1.wav")[: len(speech)]
    alone_speech = SileroModel.shared().stream().feed(speech)
    alone_other = SileroModel.shared().stream().feed(other)

    first, second = SileroModel.shared().stream(), SileroModel.shared().stream()
    first_chunks = np.array_split(speech, range(1000, len(speech), 1000))
    second_chunks = np.array_split(other, range(777, len(other), 777))
    got_first, got_second = [], []
    for first_chunk, second_chunk in zip_longest(first_chunks, second_chunks, fillvalue=np.empty(0)):
        got_first.append(first.feed(first_chunk))
        got_second.append(second.feed(second_chunk))
    np.testing.assert_allclose(np.concatenate(got_first), alone_speech, atol=1e-5)
    np.testing.assert_allclose(np.concatenate(got_second), alone_other, atol=1e-5)


def test_reset_starts_the_stream_afresh() -> None:
    samples = clip_samples("pocketsphinx-testdata/goforward.wav")
    stream = SileroModel.shared().stream()
    fresh = stream.feed(samples)
    stream.feed(samples[:700])
    stream.reset()
    assert stream.windows_seen == 0
    np.testing.assert_allclose(stream.feed(samples), fresh, atol=1e-5)


def test_two_utterances_apart_make_two_turns_at_the_silence_edges() -> None:
    speech = trim_to_speech(clip_samples("speechbrain/spk1_snt1.wav"))
    silence_start_ms = len(speech) * 1000 // ENGINE_RATE_HZ
    silence_end_ms = silence_start_ms + 1500
    audio = np.concatenate([speech, np.zeros(3 * ENGINE_RATE_HZ // 2, dtype=np.float32), speech])

    stream, detector = SileroModel.shared().stream(), TurnDetector(VadParams())
    events: list[TurnStarted | TurnEnded] = []
    for start in range(0, len(audio), 320):  # 20 ms chunks, as a live client sends them
        events += detector.feed(stream.feed(audio[start : start + 320]))
    events += detector.flush()

    assert [type(event) for event in events] == [TurnStarted, TurnEnded, TurnStarted, TurnEnded]
    first_start, first_end, second_start, second_end = events
    assert isinstance(first_start, TurnStarted) and isinstance(second_start, TurnStarted)
    assert isinstance(first_end, TurnEnded) and isinstance(second_end, TurnEnded)
    assert first_start.onset_ms <= 200
    assert first_start.audio_start_ms == 0
    assert abs(first_end.audio_end_ms - silence_start_ms) <= 200
    assert abs(second_start.onset_ms - silence_end_ms) <= 200
    assert second_start.audio_start_ms == second_start.onset_ms - 300
    assert abs(second_end.audio_end_ms - len(audio) * 1000 // ENGINE_RATE_HZ) <= 200


async def test_the_vad_thread_gives_each_session_what_it_would_get_inline() -> None:
    samples = clip_samples("pocketsphinx-testdata/goforward.wav")
    runner = VadRunner(SileroModel.shared)
    try:
        threaded = [runner.stream() for _ in range(3)]
        chunks = [samples[i : i + 1600] for i in range(0, len(samples), 1600)]
        # Three sessions append at once, chunk after chunk, as live sockets would.
        got = [
            await asyncio.gather(*(stream.probabilities(chunk) for stream in threaded)) for chunk in chunks
        ]
        inline = SileroModel.shared().stream()
        expected = np.concatenate([inline.feed(chunk) for chunk in chunks])
        for session in range(3):
            np.testing.assert_allclose(np.concatenate([step[session] for step in got]), expected, atol=1e-6)
        assert threaded[0].windows_seen == len(expected)
    finally:
        runner.close()
