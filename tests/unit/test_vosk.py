"""The vosk adapter: Vosk's result JSON as Partials and Finals, the utterance flow, and the catalog checks.

No Vosk model can be had offline, so the recognizer in the flow tests replays JSON in Vosk's own shapes; the
load-and-recognise test runs only when EARSHOT_TEST_VOSK_MODEL names an unpacked model directory.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from earshot.audio.decode import decode_audio
from earshot.engines.base import Engine, TranscribeOptions
from earshot.engines.results import Final, Flushed, Partial, Word
from earshot.engines.spec import CatalogError, ModelSpec
from earshot.engines.vosk_results import (
    RecognizerFeed,
    final_from_json,
    partial_from_json,
    segment_of,
)
from earshot.engines.workers import WorkerPool
from earshot.routing.router import build_engine
from tests.conftest import shared_audio

RESULT = json.dumps(
    {
        "result": [
            {"conf": 1.0, "end": 1.02, "start": 0.6, "word": "one"},
            {"conf": 0.734, "end": 1.5, "start": 1.02, "word": "zero"},
        ],
        "text": "one zero",
    }
)


def test_a_result_is_a_final_with_timed_words_and_confidence() -> None:
    final = final_from_json(RESULT, start_s=0.0, end_s=2.0)
    assert final == Final(
        text="one zero",
        start=0.6,
        end=1.5,
        words=(Word("one", 0.6, 1.02, 1.0), Word("zero", 1.02, 1.5, 0.734)),
    )


def test_an_empty_result_is_no_final() -> None:
    assert final_from_json('{"text": ""}', 0.0, 1.0) is None
    assert final_from_json("not json", 0.0, 1.0) is None


def test_a_result_without_words_spans_the_utterance() -> None:
    assert final_from_json('{"text": "one zero"}', 3.0, 4.5) == Final("one zero", 3.0, 4.5)


def test_alternatives_take_the_best_and_words_without_confidence_count_as_sure() -> None:
    raw = json.dumps(
        {
            "alternatives": [
                {"confidence": 201.4, "result": [{"start": 0.3, "end": 0.7, "word": "nine"}], "text": "nine"},
                {
                    "confidence": 180.2,
                    "result": [{"start": 0.3, "end": 0.7, "word": "night"}],
                    "text": "night",
                },
            ]
        }
    )
    final = final_from_json(raw, 0.0, 1.0)
    assert final is not None and final.words == (Word("nine", 0.3, 0.7, 1.0),)


def test_partials() -> None:
    assert partial_from_json('{"partial": "one ze"}', 0.5, 1.25) == Partial("one ze", 0.5, 1.25)
    assert partial_from_json('{"partial": ""}', 0.5, 1.25) is None


def test_a_segment_carries_the_words_and_their_mean_log_confidence() -> None:
    final = final_from_json(RESULT, 0.0, 2.0)
    assert final is not None
    segment = segment_of(final)
    assert (segment.start, segment.end, segment.text, segment.words) == (0.6, 1.5, "one zero", final.words)
    assert segment.avg_logprob == pytest.approx((0.0 + -0.3092) / 2, abs=1e-3)


class ReplayRecognizer:
    """Stands in for vosk.KaldiRecognizer: answers with the JSON Vosk gives for each call, in order."""

    def __init__(self, script: list[tuple[bool, str]], final: str = '{"text": ""}') -> None:
        self._script = list(script)
        self._final = final
        self._ended = ""
        self._partial = '{"partial": ""}'
        self.audio = b""

    def AcceptWaveform(self, data: bytes) -> int:
        self.audio += data
        ended, raw = self._script.pop(0)
        if ended:
            self._ended = raw
        else:
            self._partial = raw
        return int(ended)

    def Result(self) -> str:
        return self._ended

    def PartialResult(self) -> str:
        return self._partial

    def FinalResult(self) -> str:
        return self._final


QUARTER_S = b"\x00\x00" * 4000


def test_partials_as_the_text_changes_then_a_final_at_the_utterance_end() -> None:
    recognizer = ReplayRecognizer(
        [
            (False, '{"partial": "one"}'),
            (False, '{"partial": "one"}'),
            (False, '{"partial": "one zero"}'),
            (True, RESULT),
            (False, '{"partial": ""}'),
        ]
    )
    feed = RecognizerFeed(recognizer)
    results = [result for _ in range(5) for result in feed.feed(QUARTER_S)]
    assert results == [
        Partial("one", 0.0, 0.25),
        Partial("one zero", 0.0, 0.75),
        final_from_json(RESULT, 0.0, 1.0),
    ]
    assert len(recognizer.audio) == 5 * len(QUARTER_S)
    # Nothing was heard since the last Final: finalizing gives nothing.
    assert feed.finalize() == []


def test_finalize_ends_the_utterance_in_progress_and_the_next_starts_after_it() -> None:
    final = json.dumps({"result": [{"conf": 0.5, "start": 1.1, "end": 1.4, "word": "two"}], "text": "two"})
    feed = RecognizerFeed(ReplayRecognizer([(False, '{"partial": "t"}')] * 3, final=final))
    feed.feed(QUARTER_S * 4)
    assert feed.finalize() == [Final("two", 1.1, 1.4, (Word("two", 1.1, 1.4, 0.5),))]
    assert feed.feed(QUARTER_S) == [Partial("t", 1.0, 1.25)]


def test_without_interim_results_only_finals() -> None:
    feed = RecognizerFeed(ReplayRecognizer([(False, '{"partial": "one"}'), (True, RESULT)]), False)
    assert feed.feed(QUARTER_S) == []
    assert feed.feed(QUARTER_S) == [final_from_json(RESULT, 0.0, 0.5)]


def test_a_catalog_naming_vosk_without_the_package_fails_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "vosk", None)  # what `import vosk` meets when the extra is absent
    monkeypatch.delitem(sys.modules, "earshot.engines.vosk", raising=False)
    pool = WorkerPool(1)
    try:
        with pytest.raises(CatalogError) as error:
            build_engine("kaldi", ModelSpec(engine="vosk", options={"model": "/models/vosk"}), pool)
    finally:
        pool.shutdown()
    assert "vosk" in str(error.value) and "\n" not in str(error.value)


def test_a_model_that_is_not_a_directory_is_refused_at_start_up(tmp_path: Path) -> None:
    pytest.importorskip("vosk", reason="the vosk extra is not installed")
    pool = WorkerPool(1)
    try:
        with pytest.raises(CatalogError, match="is not a directory"):
            build_engine("kaldi", ModelSpec(engine="vosk", options={"model": str(tmp_path / "no")}), pool)
        with pytest.raises(CatalogError, match=r"options\.modle: Extra inputs are not permitted"):
            build_engine("kaldi", ModelSpec(engine="vosk", options={"modle": str(tmp_path)}), pool)
    finally:
        pool.shutdown()


@pytest.fixture(scope="module")
async def vosk_engine() -> AsyncIterator[Engine]:
    pytest.importorskip("vosk", reason="the vosk extra is not installed")
    model = os.environ.get("EARSHOT_TEST_VOSK_MODEL")
    if not model:
        pytest.skip("no Vosk model offline: set EARSHOT_TEST_VOSK_MODEL to an unpacked model directory")
    pool = WorkerPool(1)
    engine = build_engine("vosk", ModelSpec(engine="vosk", options={"model": model}), pool)
    await engine.start()
    yield engine
    await engine.stop()
    pool.shutdown()


async def test_a_real_model_recognises_digits_offline_and_live(vosk_engine: Engine) -> None:
    audio = decode_audio(shared_audio("vosk/test_10001-90210-01803.wav").read_bytes())
    segments = [s async for s in vosk_engine.transcribe_segments(audio, TranscribeOptions())]
    words = [w for s in segments for w in s.words]
    assert " ".join(w.word for w in words).startswith("one zero zero zero one")
    assert all(0 <= w.start <= w.end <= audio.duration_s + 0.1 and 0 <= w.confidence <= 1 for w in words)

    stream = vosk_engine.open_stream(TranscribeOptions())
    for start in range(0, int(audio.duration_s * 4) + 1):
        await stream.send(audio.slice(start / 4, (start + 1) / 4))
    await stream.close()
    results = [r async for r in stream.results()]
    assert any(isinstance(r, Partial) for r in results) and results.count(Flushed()) == 1
    finals = [r for r in results if isinstance(r, Final)]
    assert " ".join(f.text for f in finals).startswith("one zero zero zero one")
