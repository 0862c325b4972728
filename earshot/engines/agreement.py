"""LocalAgreement-2: stable partials and finals from an engine that only decodes whole buffers.

The buffer of the current turn is re-decoded every `step_s` of new audio. A word becomes final once two
consecutive hypotheses agree on it (and on every word before it); the rest is shown as a Partial. Final audio
is cut off the buffer, so decodes stay short. A hypothesis may still restate committed words at its start (a
buffer not cut yet, or a decoder re-emitting the word the buffer was cut after): words lying mostly before
`committed_until_s` are skipped, then a run that repeats the committed tail and ends within
REPEAT_TOLERANCE_S of it.

When nothing agrees for `max_buffer_s`, the words in the first half of the buffer are made final and that half
is cut off, so a word straddling the middle may be lost. An engine failure ends `results()` by raising the
EngineError; `send` and `finalize` raise it from then on.

Words without meaningful times (every start and end 0) are matched by text and position alone: a hypothesis
is taken to restate the committed words it starts with, agreement is the common prefix of the last two
hypotheses, and the buffer can only be cut at `max_buffer_s`.

With `commit="phrase"` nothing is committed by agreement: the re-decodes are drafts
(`TranscribeOptions.draft`) that only feed Partials, and each phrase is decoded whole, at full quality, when
it is finalized (LiveSession finalizes at every pause) or reaches `max_buffer_s`. Its finals are then the
one-shot decode of the same audio, which LocalAgreement's mid-phrase cuts are not, and drafts may be cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Literal

import numpy as np

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.base import Engine, EngineError, TranscribeOptions, Transcript, transcribe
from earshot.engines.result_queue import ResultQueue
from earshot.engines.results import EngineResult, Final, Flushed, Partial, Word

log = logging.getLogger(__name__)

REPEAT_TOLERANCE_S = 0.05
# Enough to recognise a restated buffer of any sensible length; older committed words are forgotten.
COMMITTED_TAIL_WORDS = 256

_EDGE_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")


def _key(word: Word) -> str:
    return _EDGE_PUNCTUATION.sub("", word.word).casefold()


def _timed(words: Sequence[Word]) -> bool:
    return any(word.end > 0 for word in words)


class LocalAgreement:
    """Commits the words that two consecutive hypotheses agree on; committed words are never revised."""

    def __init__(self, hold_back: int = 0, tolerance_s: float = REPEAT_TOLERANCE_S) -> None:
        if hold_back < 0:
            raise ValueError("hold_back must not be negative")
        self._hold_back = hold_back
        self._tolerance_s = tolerance_s
        self._committed: list[Word] = []
        self._tentative: tuple[Word, ...] = ()
        self._until_s = 0.0

    @property
    def tentative(self) -> tuple[Word, ...]:
        """The newest hypothesis past what is committed: what a Partial shows."""
        return self._tentative

    @property
    def committed_until_s(self) -> float:
        """End of the last committed word (or the reset time): audio before it is final."""
        return self._until_s

    def update(self, hypothesis: Sequence[Word]) -> list[Word]:
        """Take the newest hypothesis of the uncommitted region; return the words it newly commits."""
        fresh = list(hypothesis[self._restated(hypothesis) :])
        limit = max(0, len(fresh) - self._hold_back)
        agreed = 0
        while agreed < min(limit, len(self._tentative)) and _key(fresh[agreed]) == _key(
            self._tentative[agreed]
        ):
            agreed += 1
        self._tentative = tuple(fresh[agreed:])
        return self._commit(fresh[:agreed])

    def flush(self, count: int | None = None) -> list[Word]:
        """Commit the first `count` tentative words (all by default) and return them."""
        count = len(self._tentative) if count is None else max(0, count)
        words, self._tentative = list(self._tentative[:count]), self._tentative[count:]
        return self._commit(words)

    def reset(self, at_s: float) -> None:
        """Forget everything and start a new region at `at_s`."""
        self._committed.clear()
        self._tentative = ()
        self._until_s = at_s

    def _commit(self, words: list[Word]) -> list[Word]:
        self._committed.extend(words)
        del self._committed[:-COMMITTED_TAIL_WORDS]
        if _timed(words):
            self._until_s = max(self._until_s, max(word.end for word in words))
        return words

    def _restated(self, hypothesis: Sequence[Word]) -> int:
        """How many leading words of `hypothesis` restate committed audio."""
        timed = _timed(hypothesis)
        skip = 0
        # Words lying mostly in committed audio restate it, maybe differently (an untrimmed buffer re-heard).
        while (
            timed
            and skip < len(hypothesis)
            and (hypothesis[skip].start + hypothesis[skip].end) / 2 < self._until_s
        ):
            skip += 1
        rest = hypothesis[skip:]
        # Then a repeat of the committed tail right at the boundary (decoders like to re-emit the last word).
        limit = 0
        while limit < min(len(rest), len(self._committed)) and (
            not timed or rest[limit].end <= self._until_s + self._tolerance_s
        ):
            limit += 1
        for k in range(limit, 0, -1):
            if [_key(w) for w in rest[:k]] == [_key(w) for w in self._committed[-k:]]:
                return skip + k
        return skip


class AgreementStream:
    """An EngineStream over an engine that only decodes whole buffers, made stable by LocalAgreement-2."""

    def __init__(
        self,
        engine: Engine,
        options: TranscribeOptions,
        step_s: float = 1.0,
        max_buffer_s: float = 30.0,
        commit: Literal["agreement", "phrase"] = "agreement",
    ) -> None:
        if step_s <= 0 or max_buffer_s <= 0:
            raise ValueError("step_s and max_buffer_s must be positive")
        self._engine = engine
        # LiveSession sends only what its VAD heard as speech, padded: the engine need not look for it again.
        self._options = replace(options, word_timestamps=True, speech_gated=True)
        self._draft_options = replace(self._options, word_timestamps=False, draft=True)
        self._commit_by_agreement = commit == "agreement"
        self._step_samples = max(1, round(step_s * ENGINE_RATE_HZ))
        self._max_buffer_samples = round(max_buffer_s * ENGINE_RATE_HZ)
        self._agreement = LocalAgreement()
        # The turn's audio, as chunks joined lazily; positions are samples on the stream's clock.
        self._chunks: list[np.ndarray] = []
        self._start = 0
        self._received = 0
        self._decoded_until = 0
        self._last_partial = ""
        self._results = ResultQueue()
        self._decoding = asyncio.Lock()
        self._finalizes_waiting = 0
        self._task: asyncio.Task[None] | None = None
        # A final decode started early (`prepare_final`): the buffer's (start, end) and the decode.
        self._prepared: tuple[int, int, asyncio.Task[Transcript | None]] | None = None
        self._closed = False

    async def send(self, audio: Audio) -> None:
        """Buffer more audio; a re-decode starts in the background once `step_s` of it is new."""
        if self._closed:
            raise EngineError("the stream is closed")
        self._raise_if_failed()
        if len(audio.samples):
            self._chunks.append(audio.samples)
            self._received += len(audio.samples)
            # The turn went on: an early final decode is of audio that no longer ends it.
            self._drop_prepared()
        # A running decode loops on to cover whatever arrived meanwhile, so at most one runs at a time.
        idle = self._task is None or self._task.done()
        if idle and self._received - self._decoded_until >= self._step_samples:
            self._task = asyncio.create_task(self._decode_steps())

    async def finalize(self) -> None:
        """Decode the turn once more, make every remaining word Final, then give Flushed; stays open."""
        if self._closed:
            return
        self._raise_if_failed()
        await self._finalize()
        self._raise_if_failed()

    async def prepare_final(self) -> None:
        """Start the final decode of the buffer now, in the background; `finalize` takes it if no audio
        came after it, else it is dropped."""
        if self._closed or self._results.error is not None or self._received <= self._start:
            return
        if self._prepared is not None and self._prepared[:2] == (self._start, self._received):
            return
        self._drop_prepared()
        decode = asyncio.create_task(self._transcribe(self._buffer(), self._options))
        self._prepared = (self._start, self._received, decode)

    def _take_prepared(self) -> asyncio.Task[Transcript | None] | None:
        """The early final decode, if it covers exactly the buffer as it is now."""
        prepared = self._prepared
        if prepared is None or prepared[:2] != (self._start, self._received):
            self._drop_prepared()
            return None
        self._prepared = None
        log.debug("final decode of %.2f s: prepared early", (prepared[1] - prepared[0]) / ENGINE_RATE_HZ)
        return prepared[2]

    def _drop_prepared(self) -> None:
        prepared, self._prepared = self._prepared, None
        if prepared is not None:
            prepared[2].cancel()

    async def close(self) -> None:
        """Finalize, then end `results()`; engine failures are reported there, not raised here."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._results.error is None:
                await self._finalize()
            if self._task is not None:
                await self._task
        finally:
            self._results.end()

    async def abort(self) -> None:
        """End `results()` now: a decode in progress is abandoned and nothing more is decoded."""
        self._closed = True
        self._drop_prepared()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._results.end()

    def results(self) -> AsyncIterator[EngineResult]:
        """Partial, Final and Flushed results in order; raises the EngineError that ended the stream."""
        return self._results.results()

    def _raise_if_failed(self) -> None:
        if self._results.error is not None:
            raise EngineError(str(self._results.error)) from self._results.error

    async def _decode_steps(self) -> None:
        async with self._decoding:
            while self._results.error is None and self._received - self._decoded_until >= self._step_samples:
                if self._commit_by_agreement:
                    await self._decode(final=False)
                elif self._received - self._start > self._max_buffer_samples:
                    # Cut at exactly max_buffer_s, however much arrived during the last draft: the phrase's
                    # text then depends on the audio alone.
                    await self._decode(final=True, until=self._start + self._max_buffer_samples)
                elif self._finalizes_waiting or self._prepared is not None:
                    # The phrase's full decode is next (or under way): a draft of it now would only delay its
                    # final text (and, on a busy machine, everyone else's).
                    return
                else:
                    await self._draft()

    async def _finalize(self) -> None:
        self._finalizes_waiting += 1
        try:
            async with self._decoding:
                if self._results.error is None and self._received > self._start:
                    await self._decode(final=True, prepared=self._take_prepared())
                else:
                    self._drop_prepared()
                self._results.put(Flushed())
        finally:
            self._finalizes_waiting -= 1

    def _buffer(self) -> np.ndarray:
        if len(self._chunks) != 1:
            joined = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)
            self._chunks = [joined]
        return self._chunks[0]

    def _trim(self, to_sample: int) -> None:
        cut = min(to_sample, self._received) - self._start
        if cut > 0:
            self._chunks = [self._buffer()[cut:]]
            self._start += cut

    async def _transcribe(self, samples: np.ndarray, options: TranscribeOptions) -> Transcript | None:
        """The engine's transcript of `samples`, or None once a failure has ended the stream."""
        try:
            return await transcribe(self._engine, Audio(samples), options)
        except EngineError as e:
            self._results.fail(e)
        except Exception as e:
            log.exception("engine %s failed while streaming", self._engine.name)
            failure = EngineError("the engine failed")
            failure.__cause__ = e
            self._results.fail(failure)
        return None

    async def _draft(self) -> None:
        """Phrase mode: a draft decode of the whole buffer, shown as a Partial and never committed."""
        samples = self._buffer()
        end = self._start + len(samples)
        self._decoded_until = end
        transcript = await self._transcribe(samples, self._draft_options)
        if transcript is not None:
            self._emit_partial([Word(token, 0.0, 0.0) for token in transcript.text.split()], end, draft=True)

    async def _decode(
        self,
        final: bool,
        until: int | None = None,
        prepared: asyncio.Task[Transcript | None] | None = None,
    ) -> None:
        """Decode the buffer (up to sample `until`; or take the `prepared` decode of it), queue what it
        commits and shows, and trim the committed audio off."""
        samples = self._buffer()
        if until is not None:
            samples = samples[: until - self._start]
        start, end = self._start, self._start + len(samples)
        self._decoded_until = end
        transcript = await (prepared or self._transcribe(samples, self._options))
        if transcript is None:
            return
        words = list(transcript.words)
        if not words and transcript.text:
            words = [Word(token, 0.0, 0.0) for token in transcript.text.split()]
        elif _timed(words):
            offset_s = start / ENGINE_RATE_HZ
            words = [replace(w, start=w.start + offset_s, end=w.end + offset_s) for w in words]

        committed = self._agreement.update(words)
        if final:
            committed += self._agreement.flush()
            self._agreement.reset(end / ENGINE_RATE_HZ)
            self._trim(end)
            self._last_partial = ""
        else:
            self._trim(round(self._agreement.committed_until_s * ENGINE_RATE_HZ))
            if end - self._start > self._max_buffer_samples:
                # Nothing agreed for too long: make the first half final so the buffer cannot grow forever.
                # A word straddling the middle may be cut and misheard.
                middle = self._start + (end - self._start) // 2
                middle_s = middle / ENGINE_RATE_HZ
                tentative = self._agreement.tentative
                count = (
                    sum(1 for w in tentative if w.end <= middle_s)
                    if _timed(tentative)
                    else len(tentative) // 2
                )
                committed += self._agreement.flush(count)
                self._trim(middle)
        if committed:
            self._emit_final(committed, start, end)
        if not final:
            self._emit_partial(self._agreement.tentative, end)

    def _emit_final(self, words: list[Word], start: int, end: int) -> None:
        if _timed(words):
            start_s, end_s = words[0].start, words[-1].end
        else:
            start_s, end_s = start / ENGINE_RATE_HZ, end / ENGINE_RATE_HZ
        text = " ".join(word.word.strip() for word in words)
        self._results.put(Final(text=text, start=start_s, end=end_s, words=tuple(words)))
        self._last_partial = ""

    def _emit_partial(self, words: Sequence[Word], end: int, draft: bool = False) -> None:
        text = " ".join(word.word.strip() for word in words)
        if text != self._last_partial:
            self._last_partial = text
            self._results.put(
                Partial(text=text, start=self._start / ENGINE_RATE_HZ, end=end / ENGINE_RATE_HZ, draft=draft)
            )
