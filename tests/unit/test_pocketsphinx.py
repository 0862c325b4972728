"""The pocketsphinx engine: speech regions, one-shot decoding and the incremental stream."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines import pocketsphinx_decode, pocketsphinx_live
from earshot.engines.base import Engine, TranscribeOptions, transcribe
from earshot.engines.pocketsphinx import speech_regions
from earshot.engines.pocketsphinx_decode import MAX_REGION_S
from earshot.engines.results import Final, Partial
from tests.conftest import shared_audio


def test_silence_has_no_speech_regions() -> None:
    assert speech_regions(Audio(np.zeros(5 * ENGINE_RATE_HZ, dtype=np.float32))) == []


def test_regions_cover_the_speech_and_long_speech_is_split() -> None:
    audio = decode_audio(shared_audio("faster-whisper/multilingual.mp3").read_bytes())
    regions = speech_regions(audio)
    assert len(regions) >= 2
    assert all(0 <= start < end <= audio.duration_s for start, end in regions)
    assert all(end - start <= MAX_REGION_S + 1e-6 for start, end in regions)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in pairwise(regions))


async def test_one_shot_transcript_has_words_within_the_audio(engine: Engine) -> None:
    audio = decode_audio(shared_audio("pocketsphinx-testdata/goforward.wav").read_bytes())
    transcript = await transcribe(engine, audio, TranscribeOptions())
    assert transcript.text == "go forward ten meters"
    assert [w.word for w in transcript.words] == ["go", "forward", "ten", "meters"]
    assert all(0 <= w.start < w.end <= audio.duration_s and 0 <= w.confidence <= 1 for w in transcript.words)


async def test_silence_transcribes_to_empty_text(engine: Engine) -> None:
    silence = Audio(np.zeros(3 * ENGINE_RATE_HZ, dtype=np.float32))
    assert (await transcribe(engine, silence, TranscribeOptions())).text == ""


async def test_stream_gives_partials_then_a_final_on_finalize(engine: Engine) -> None:
    audio = decode_audio(shared_audio("pocketsphinx-testdata/goforward.wav").read_bytes())
    stream = engine.open_stream(TranscribeOptions())
    chunk = ENGINE_RATE_HZ // 10
    for offset in range(0, len(audio.samples), chunk):
        await stream.send(Audio(audio.samples[offset : offset + chunk]))
    await stream.finalize()
    await stream.send(Audio(np.zeros(ENGINE_RATE_HZ // 2, dtype=np.float32)))
    await stream.close()
    results = [result async for result in stream.results()]
    partials = [r for r in results if isinstance(r, Partial)]
    finals = [r for r in results if isinstance(r, Final)]
    assert partials, "partials arrive while audio is still coming"
    assert len(finals) == 1 and results.index(finals[0]) > results.index(partials[0])
    # The Final comes from a whole-utterance pass, so it reads as the one-shot decode does.
    assert finals[0].text == "go forward ten meters"
    assert [w.word for w in finals[0].words] == finals[0].text.split()
    assert finals[0].end == audio.duration_s or abs(finals[0].end - audio.duration_s) < 0.01


def test_a_live_utterance_longer_than_one_pass_is_cut_and_keeps_all_its_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The worker-side functions, run in this process with a 3 s limit instead of 30 s.
    monkeypatch.setattr(pocketsphinx_decode, "MAX_REGION_S", 3.0)
    audio = decode_audio(shared_audio("pocketsphinx-testdata/goforward.wav").read_bytes())
    pcm = Audio(np.tile(audio.samples, 3)).pcm16()
    config = pocketsphinx_decode.PocketsphinxConfig()
    pocketsphinx_live.stream_open(config, "long")
    try:
        results = []
        for offset in range(0, len(pcm), 3200):
            results += pocketsphinx_live.stream_feed(config, "long", pcm[offset : offset + 3200])
        results += pocketsphinx_live.stream_finalize(config, "long")
    finally:
        pocketsphinx_live.stream_close("long")
    finals = [r for r in results if isinstance(r, Final)]
    assert len(finals) >= 3, "the utterance was cut at the limit rather than left undecoded"
    heard = " ".join(final.text for final in finals).split()
    assert heard.count("forward") == 3 and heard.count("go") >= 2
    assert all(a.end <= b.start + 1e-6 for a, b in pairwise(finals))


async def test_without_interim_results_each_utterance_is_decoded_whole_and_long_ones_in_pieces(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pocketsphinx_decode, "MAX_REGION_S", 3.0)
    audio = decode_audio(shared_audio("pocketsphinx-testdata/goforward.wav").read_bytes())
    stream = engine.open_stream(TranscribeOptions(interim_results=False))
    long = np.tile(audio.samples, 3)
    for offset in range(0, len(long), 1600):
        await stream.send(Audio(long[offset : offset + 1600]))
    await stream.finalize()
    await stream.send(Audio(audio.samples))
    await stream.close()
    results = [result async for result in stream.results()]
    assert not any(isinstance(r, Partial) for r in results), "no interim results were asked for"
    finals = [r for r in results if isinstance(r, Final)]
    assert len(finals) >= 4 and finals[-1].text == "go forward ten meters"
    assert sum(final.text.split().count("forward") for final in finals) == 4
    assert [type(r).__name__ for r in results].count("Flushed") == 2
    assert all(a.end <= b.start + 1e-6 for a, b in pairwise(finals))
