"""LocalAgreement-2: the commit policy on its own, and the stream over a scripted whole-buffer engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from itertools import pairwise

import numpy as np
import pytest

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.agreement import AgreementStream, LocalAgreement
from earshot.engines.base import EngineError, EngineStream, Segment, TranscribeOptions
from earshot.engines.results import EngineResult, Final, Flushed, Partial, Word

# --- the policy ---


def hyp(text: str, timed: bool = True) -> list[Word]:
    """Words spoken every 0.5 s, each 0.4 s long (or all at 0 when untimed)."""
    return [
        Word(token, 0.5 * i if timed else 0.0, 0.5 * i + 0.4 if timed else 0.0)
        for i, token in enumerate(text.split())
    ]


def texts(words: Sequence[Word]) -> list[str]:
    return [word.word for word in words]


@pytest.mark.parametrize("timed", [True, False])
def test_growing_hypotheses_commit_one_word_behind(timed: bool) -> None:
    agreement = LocalAgreement()
    assert texts(agreement.update(hyp("the", timed))) == []
    assert texts(agreement.update(hyp("the cat", timed))) == ["the"]
    assert texts(agreement.update(hyp("the cat sat", timed))) == ["cat"]
    assert texts(agreement.update(hyp("the cat sat on", timed))) == ["sat"]
    assert texts(agreement.tentative) == ["on"]
    assert agreement.committed_until_s == pytest.approx(1.4 if timed else 0.0)


def test_a_revised_tail_is_not_committed_early() -> None:
    agreement = LocalAgreement()
    agreement.update(hyp("the cat"))
    assert texts(agreement.update(hyp("the hat sat"))) == ["the"]
    assert texts(agreement.tentative) == ["hat", "sat"]
    assert texts(agreement.update(hyp("the hat sat on"))) == ["hat", "sat"]


def test_committed_words_are_never_revised() -> None:
    agreement = LocalAgreement()
    agreement.update(hyp("the cat"))
    assert texts(agreement.update(hyp("the cat sat"))) == ["the", "cat"]
    # The decoder changes its mind about audio already committed: only the words after it count.
    assert texts(agreement.update(hyp("a hat sat on"))) == ["sat"]
    assert texts(agreement.update(hyp("a hat sat on the"))) == ["on"]
    assert texts(agreement.flush()) == ["the"]


def test_flush_commits_everything_tentative_once() -> None:
    agreement = LocalAgreement()
    agreement.update(hyp("the cat"))
    assert texts(agreement.flush()) == ["the", "cat"]
    assert agreement.tentative == ()
    assert agreement.committed_until_s == pytest.approx(0.9)
    assert agreement.flush() == []
    assert texts(agreement.update(hyp("the cat sat"))) == []
    assert texts(agreement.tentative) == ["sat"]


def test_flush_can_commit_only_the_first_words() -> None:
    agreement = LocalAgreement()
    agreement.update(hyp("the cat sat"))
    assert texts(agreement.flush(2)) == ["the", "cat"]
    assert texts(agreement.tentative) == ["sat"]


def test_hold_back_keeps_the_last_words_tentative() -> None:
    agreement = LocalAgreement(hold_back=1)
    assert agreement.update(hyp("the cat")) == []
    assert texts(agreement.update(hyp("the cat"))) == ["the"]
    assert texts(agreement.update(hyp("the cat sat"))) == ["cat"]
    assert texts(agreement.tentative) == ["sat"]
    assert texts(agreement.flush()) == ["sat"]


def test_matching_ignores_case_and_surrounding_punctuation() -> None:
    agreement = LocalAgreement()
    agreement.update(hyp("Hello world"))
    assert texts(agreement.update(hyp('"hello, World. Again'))) == ['"hello,', "World."]


def test_committed_words_repeated_at_the_start_are_not_committed_twice() -> None:
    agreement = LocalAgreement()
    agreement.update(hyp("the cat"))
    agreement.update(hyp("the cat sat"))
    # A buffer cut where "cat" ended (0.9 s), whose decode re-emits "cat" squeezed at its start.
    echo = [Word("cat", 0.9, 0.93), Word("sat", 1.0, 1.4), Word("on", 1.5, 1.9)]
    assert texts(agreement.update(echo)) == ["sat"]


def test_a_committed_word_said_again_later_is_a_new_word() -> None:
    agreement = LocalAgreement()
    agreement.update(hyp("the cat"))
    agreement.update(hyp("the cat"))
    later = [Word("cat", 1.0, 1.4), Word("food", 1.5, 1.9)]
    agreement.update(later)
    assert texts(agreement.update(later)) == ["cat", "food"]


def test_untimed_hypotheses_restating_the_turn_are_matched_by_text() -> None:
    agreement = LocalAgreement()
    agreement.update(hyp("yes yes", timed=False))
    assert texts(agreement.update(hyp("yes yes no", timed=False))) == ["yes", "yes"]
    assert texts(agreement.update(hyp("yes yes no yes", timed=False))) == ["no"]
    assert texts(agreement.flush()) == ["yes"]


def test_reset_starts_a_new_region() -> None:
    agreement = LocalAgreement()
    agreement.update(hyp("the cat"))
    agreement.reset(5.0)
    assert agreement.tentative == ()
    assert agreement.committed_until_s == 5.0
    later = [Word("the", 5.1, 5.4), Word("end", 5.5, 5.9)]
    agreement.update(later)
    assert texts(agreement.update(later)) == ["the", "end"]
    assert agreement.committed_until_s == pytest.approx(5.9)


# --- the stream ---

# Sample i of the session carries i / 2**20 (exact in float32): the fake engine sees where a buffer starts.
POSITION_SCALE = 2**20


def session_audio(start_s: float, end_s: float) -> Audio:
    first, last = round(start_s * ENGINE_RATE_HZ), round(end_s * ENGINE_RATE_HZ)
    return Audio((np.arange(first, last) / POSITION_SCALE).astype(np.float32))


def script(until_s: float) -> list[Word]:
    """A steady talker: word i is "w{i}" from 0.13 + 0.45 i to 0.44 + 0.45 i, the last ending by `until_s`."""
    words: list[Word] = []
    while (end_s := round(0.44 + 0.45 * len(words), 3)) <= until_s:
        words.append(Word(f"w{len(words)}", round(end_s - 0.31, 3), end_s))
    return words


def script_text(words: Sequence[Word]) -> str:
    return " ".join(word.word for word in words)


class ScriptedEngine:
    """Hears the scripted words inside each buffer; a word cut by the buffer's end comes out garbled."""

    language = "en"

    def __init__(
        self,
        words: list[Word],
        delay_s: float = 0.0,
        fail_on_decode: int | None = None,
        failure: Exception | None = None,
        unstable: bool = False,
    ) -> None:
        self.name = "scripted"
        self.ready = True
        self.words = words
        self.delay_s = delay_s
        self.fail_on_decode = fail_on_decode
        self.failure = failure or EngineError("scripted failure")
        self.unstable = unstable
        self.decodes: list[float] = []  # buffer length of each decode, seconds
        self.options: list[TranscribeOptions] = []
        self.running = 0
        self.max_running = 0

    async def start(self) -> None:
        """Nothing to load."""

    async def stop(self) -> None:
        """Nothing to release."""

    async def transcribe_segments(self, audio: Audio, options: TranscribeOptions) -> AsyncIterator[Segment]:
        """One segment with the words the buffer holds."""
        assert options.word_timestamps or options.draft, "drafts alone may skip word times"
        self.options.append(options)
        self.decodes.append(audio.duration_s)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if len(self.decodes) == self.fail_on_decode:
                raise self.failure
            words = self.heard(audio)
        finally:
            self.running -= 1
        if words:
            yield Segment(words[0].start, words[-1].end, script_text(words), tuple(words))

    def heard(self, audio: Audio) -> list[Word]:
        if not len(audio.samples):
            return []
        offset_s = round(float(audio.samples[0]) * POSITION_SCALE) / ENGINE_RATE_HZ
        end_s = offset_s + audio.duration_s
        heard = []
        for word in self.words:
            if abs(word.end - offset_s) < 1e-3:
                # Like Whisper, re-emit the word the buffer was cut after, squeezed at its start.
                heard.append(Word(word.word, 0.0, 0.03))
            elif offset_s - 1e-3 <= word.start < end_s:
                text = word.word if word.end <= end_s else f"{word.word}~{round((end_s - word.start) * 1000)}"
                heard.append(Word(text, word.start - offset_s, min(word.end, end_s) - offset_s))
        if self.unstable:
            heard = [replace(word, word=f"{word.word}#{len(self.decodes)}") for word in heard]
        return heard

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        """Stream by agreement, the way a whole-buffer engine does."""
        return AgreementStream(self, options)


async def feed(
    stream: AgreementStream, start_s: float, end_s: float, chunk_s: float = 0.1, pause_s: float = 0.0
) -> float:
    """Send session audio in chunks, letting background decodes run between them; the slowest send, s."""
    chunk = round(chunk_s * ENGINE_RATE_HZ)
    first, last = round(start_s * ENGINE_RATE_HZ), round(end_s * ENGINE_RATE_HZ)
    slowest_s = 0.0
    for offset in range(first, last, chunk):
        began = time.perf_counter()
        await stream.send(session_audio(offset / ENGINE_RATE_HZ, min(offset + chunk, last) / ENGINE_RATE_HZ))
        slowest_s = max(slowest_s, time.perf_counter() - began)
        if pause_s:
            await asyncio.sleep(pause_s)
        else:
            for _ in range(3):
                await asyncio.sleep(0)
    return slowest_s


async def whole_session(engine: ScriptedEngine, seconds: float, **options: float) -> list[EngineResult]:
    stream = AgreementStream(engine, TranscribeOptions(), **options)
    await feed(stream, 0.0, seconds)
    await stream.close()
    return [result async for result in stream.results()]


def finals_of(results: Sequence[EngineResult]) -> list[Final]:
    return [result for result in results if isinstance(result, Final)]


async def test_a_session_is_final_word_for_word_without_duplicates() -> None:
    words = script(59.5)
    results = await whole_session(ScriptedEngine(words), 60.0)
    finals = finals_of(results)
    assert " ".join(final.text for final in finals) == script_text(words)
    assert len(finals) > 30, "words become final as the session goes, not only at close"
    assert all(a.end <= b.start for a, b in pairwise(finals))
    assert all(final.text == script_text(final.words) for final in finals)
    assert isinstance(results[-1], Flushed)


async def test_partials_arrive_before_the_finals_covering_them() -> None:
    results = await whole_session(ScriptedEngine(script(19.5)), 20.0)
    shown: set[str] = set()
    for result in results:
        if isinstance(result, Partial):
            shown.update(result.text.split())
        elif isinstance(result, Final):
            assert set(result.text.split()) <= shown, result
    assert any(isinstance(result, Partial) and "~" in result.text for result in results)


async def test_partials_come_only_when_the_tentative_text_changes() -> None:
    results = await whole_session(ScriptedEngine(script(4.5)), 10.0)
    partials = [result.text for result in results if isinstance(result, Partial)]
    assert all(a != b for a, b in pairwise(partials))
    last_final = max(i for i, result in enumerate(results) if isinstance(result, Final))
    assert results[last_final + 1 :] == [Flushed()], "silence after speech brings nothing new"


async def test_decoded_buffers_stay_short_over_a_long_stream() -> None:
    engine = ScriptedEngine(script(59.5))
    await whole_session(engine, 60.0, step_s=1.0)
    assert len(engine.decodes) >= 60
    assert max(engine.decodes) < 2.5


async def test_a_buffer_that_never_agrees_is_cut_at_max_buffer_s() -> None:
    engine = ScriptedEngine(script(19.5), unstable=True)
    finals = finals_of(await whole_session(engine, 20.0, step_s=1.0, max_buffer_s=5.0))
    assert max(engine.decodes) <= 5.0 + 1.0 + 1e-6
    assert len(finals) >= 3
    indices = [int(word.word[1:].split("#")[0]) for final in finals for word in final.words]
    assert indices == sorted(set(indices)), "no word is committed twice"


async def test_decodes_never_overlap_when_audio_outpaces_them() -> None:
    words = script(9.5)
    engine = ScriptedEngine(words, delay_s=0.05)
    stream = AgreementStream(engine, TranscribeOptions(), step_s=1.0)
    slowest_send_s = await feed(stream, 0.0, 10.0, pause_s=0.002)
    await stream.close()
    finals = finals_of([result async for result in stream.results()])
    assert engine.max_running == 1
    assert 2 <= len(engine.decodes) < 10, "a decode covers all the audio that came while the last one ran"
    assert slowest_send_s < engine.delay_s, "send never waits for a decode"
    assert " ".join(final.text for final in finals) == script_text(words)


async def until_flushed(results: AsyncIterator[EngineResult]) -> list[Final]:
    """The Finals given before the next Flushed."""
    finals = []
    async with asyncio.timeout(2):
        while not isinstance(result := await anext(results), Flushed):
            if isinstance(result, Final):
                finals.append(result)
    return finals


async def test_finalize_flushes_the_turn_and_the_stream_keeps_working() -> None:
    stream = AgreementStream(ScriptedEngine(script(60.0)), TranscribeOptions(), step_s=1.0)
    results = aiter(stream.results())
    await feed(stream, 0.0, 2.8)
    await stream.finalize()
    first_turn = await until_flushed(results)
    assert " ".join(final.text for final in first_turn) == "w0 w1 w2 w3 w4 w5"
    await stream.finalize()
    assert await until_flushed(results) == [], "nothing new to finalize"

    await feed(stream, 2.8, 5.0)
    await stream.close()
    second_turn = finals_of([result async for result in results])
    assert " ".join(final.text for final in second_turn) == "w6 w7 w8 w9 w10"
    assert all(final.start >= 2.8 for final in second_turn)


@pytest.mark.parametrize(
    ("failure", "message"),
    [(EngineError("scripted failure"), "scripted failure"), (RuntimeError("boom"), "the engine failed")],
)
async def test_an_engine_failure_ends_results_with_an_engine_error(failure: Exception, message: str) -> None:
    engine = ScriptedEngine(script(9.5), fail_on_decode=2, failure=failure)
    stream = AgreementStream(engine, TranscribeOptions())
    await feed(stream, 0.0, 2.0)
    seen: list[EngineResult] = []
    with pytest.raises(EngineError, match=message):
        async with asyncio.timeout(2):
            async for result in stream.results():
                seen.append(result)
    assert [type(result) for result in seen] == [Partial]
    with pytest.raises(EngineError, match=message):
        await stream.send(session_audio(2.0, 2.1))
    with pytest.raises(EngineError, match=message):
        await stream.finalize()
    await stream.close()


# --- phrase mode: drafts for Partials, each phrase decoded whole ---


async def test_phrase_mode_is_final_only_at_finalize_from_one_full_decode_of_the_phrase() -> None:
    engine = ScriptedEngine(script(4.5))
    stream = AgreementStream(engine, TranscribeOptions(), step_s=1.0, commit="phrase")
    await feed(stream, 0.0, 5.0)
    await stream.finalize()
    await feed(stream, 5.0, 6.0)
    await stream.close()
    results = [result async for result in stream.results()]
    first_flush = results.index(Flushed())
    before = results[:first_flush]
    # While the phrase is open only drafts run, and they only show: no word is final before the pause.
    assert [type(result) for result in before[:-1]] == [Partial] * (len(before) - 1)
    assert isinstance(before[-1], Final) and before[-1].text == script_text(script(4.5))
    assert before[-1].words[0].start == pytest.approx(0.13) and before[-1].end == pytest.approx(4.49)
    drafts = [options for options in engine.options if options.draft]
    full = [options for options in engine.options if not options.draft]
    assert len(drafts) >= 3 and not any(options.word_timestamps for options in drafts)
    assert full and all(options.word_timestamps and options.speech_gated for options in full)
    first_full = next(i for i, options in enumerate(engine.options) if not options.draft)
    assert engine.decodes[first_full] == pytest.approx(5.0), "the final decode hears the whole phrase"


async def test_phrase_mode_without_pauses_is_made_final_at_max_buffer_s() -> None:
    engine = ScriptedEngine(script(11.5))
    stream = AgreementStream(engine, TranscribeOptions(), step_s=1.0, max_buffer_s=5.0, commit="phrase")
    await feed(stream, 0.0, 12.0)
    await stream.close()
    finals = finals_of([result async for result in stream.results()])
    assert len(finals) >= 2 and finals[0].end < 6.5, "a phrase that never pauses still becomes final"
    assert max(engine.decodes) <= 5.0 + 1.0 + 1e-6
    indices = [int(word.word[1:].split("~")[0]) for final in finals for word in final.words]
    assert len(indices) == len(set(indices)), "no word is final twice"


# --- a final decode prepared early (a pause that may end the turn) ---


def full_decodes(engine: ScriptedEngine) -> list[float]:
    pairs = zip(engine.decodes, engine.options, strict=True)
    return [seconds for seconds, options in pairs if not options.draft]


async def test_a_prepared_final_decode_is_the_finals_when_the_turn_ends_there() -> None:
    engine = ScriptedEngine(script(2.5), delay_s=0.05)
    stream = AgreementStream(engine, TranscribeOptions(), step_s=10.0, commit="phrase")
    await feed(stream, 0.0, 3.0)
    await stream.prepare_final()
    await asyncio.sleep(0.1)  # the decode runs during the pause, before the turn is ended
    assert full_decodes(engine) == [pytest.approx(3.0)]
    await stream.finalize()
    await stream.close()
    finals = finals_of([result async for result in stream.results()])
    assert [final.text for final in finals] == [script_text(script(2.5))]
    assert len(full_decodes(engine)) == 1, "the turn is decoded once: the final is the prepared decode"


async def test_a_prepared_final_decode_is_dropped_when_the_speech_goes_on() -> None:
    engine = ScriptedEngine(script(4.5))
    stream = AgreementStream(engine, TranscribeOptions(), step_s=10.0, commit="phrase")
    await feed(stream, 0.0, 3.0)
    await stream.prepare_final()
    await feed(stream, 3.0, 5.0)
    await stream.finalize()
    await stream.close()
    finals = finals_of([result async for result in stream.results()])
    assert [final.text for final in finals] == [script_text(script(4.5))], "the final hears the whole turn"
    assert full_decodes(engine)[-1] == pytest.approx(5.0)
