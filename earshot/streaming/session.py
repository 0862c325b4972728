"""LiveSession: one live conversation, from PCM chunks in to speech and text events out.

Every live protocol drives one of these. It resamples the caller's audio once, finds turns with the server
VAD (or takes them from the caller's commits in manual mode), sends each turn's audio to the engine stream,
and turns the engine's results into session events on the session's own audio clock.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import numpy as np

from earshot.audio.pcm import ENGINE_RATE_HZ, StreamResampler, pcm16_to_float
from earshot.audio.speech_spans import SpanParams
from earshot.audio.vad import WINDOW_SAMPLES
from earshot.engines.base import Engine, TranscribeOptions
from earshot.streaming.engine_feed import EngineFeed, EngineProgress, Turn
from earshot.streaming.events import Closed, SessionEvent, SpeechStarted, SpeechStopped
from earshot.streaming.live_config import Expiry, LiveConfig, SessionClock
from earshot.streaming.stability import TurnText
from earshot.streaming.turns import TurnDetector, TurnEnded, TurnStarted

# Audio kept from before a turn is detected, beyond its padding (the VAD decides a window late).
LOOKBACK_SLACK_MS = 200
# The silence either side of a turn's speech that the engine hears: what one-shot decoding pads its speech
# spans with (audio/speech_spans.py), from the same VAD edges, so a turn is decoded as one-shot decoding
# decodes the same speech. Before the speech, at least the caller's prefix padding; after it, the rest of a
# pause is held back and only sent if speech resumes within the turn.
SPEECH_PAD_MS = round(SpanParams().pad_s * 1000)
TRAILING_PAD_MS = SPEECH_PAD_MS
# A pause this long inside a turn ends a phrase: the engine finalizes what it heard so far, so text arrives
# while the person is still speaking and each phrase is decoded whole (as one-shot decoding splits at pauses).
PHRASE_PAUSE_MS = 300
MIN_PHRASE_MS = 1000
# A phrase this long ends at a shorter pause, so long sentences still give text before they end.
LONG_PHRASE_MS = 3000
LONG_PHRASE_PAUSE_MS = 160
# Audio sent ahead while a turn goes on stops this far past the last speech, nearer than any phrase cut (mid
# pause) can fall: where a phrase ends depends on the audio alone, never on how it was chunked or paced.
PHRASE_CUT_MIN_MS = LONG_PHRASE_PAUSE_MS // 2


class VadFeed(Protocol):
    """One session's VAD: speech probability per 32 ms window, however it is run."""

    @property
    def windows_seen(self) -> int: ...

    async def probabilities(self, samples: np.ndarray) -> np.ndarray: ...


class LiveSession:
    """A live transcription: `append` PCM16, control turns, read `events()` until Closed."""

    def __init__(
        self,
        engine: Engine,
        options: TranscribeOptions,
        config: LiveConfig,
        vad_stream: Callable[[], VadFeed] | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress: EngineProgress | None = None,
    ) -> None:
        self.engine = engine
        self.options = options
        self._vad_stream = vad_stream
        self._session_clock = SessionClock(clock)
        self._events: asyncio.Queue[SessionEvent] = asyncio.Queue()
        self._feed: EngineFeed | None = None
        self._input_samples = 0
        self._input_ms_before_rate_change = 0
        self._samples = 0  # session clock, in engine-rate samples
        self._recent: deque[tuple[int, np.ndarray]] = deque()
        self._sent_until = 0
        self._speech_until = 0
        self._phrase_start = 0
        self._turn_start: int | None = None
        # The last speech sample the engine was asked to prepare a final decode after.
        self._prepared_after: int | None = None
        self._uncommitted_from = 0
        self._closed = False
        self._closed_emitted = False
        # This session's own progress, counted into the server's.
        self._progress = EngineProgress(shared=progress)
        self.config = config
        self._apply(config)

    def _apply(self, config: LiveConfig) -> None:
        self.config = config
        self._resampler = StreamResampler(config.input_rate_hz)
        self._vad: VadFeed | None = None
        self._vad_origin = 0
        self._turns: TurnDetector | None = None
        if config.vad is not None:
            if self._vad_stream is None:
                raise ValueError("server VAD needs a VAD model")
            self._vad = self._vad_stream()
            self._vad_origin = self._samples
            self._turns = TurnDetector(config.vad)
            self._turns.reset(self._ms(self._samples))

    def reconfigure(self, config: LiveConfig) -> None:
        """Change the input rate, turn detection or limits; an open turn ends first (call `commit`)."""
        self._input_ms_before_rate_change = self.audio_ms
        self._input_samples = 0
        self._apply(config)

    @property
    def audio_ms(self) -> int:
        """Milliseconds of caller audio appended so far, at the caller's rate (what is metered)."""
        return self._input_ms_before_rate_change + self._input_samples * 1000 // self.config.input_rate_hz

    @property
    def uncommitted_ms(self) -> int:
        """Audio since the last commit, clear or turn end, in ms."""
        return self._ms(self._samples - self._uncommitted_from)

    @property
    def in_turn(self) -> bool:
        """Whether a turn is open (speech heard, or audio appended in manual mode)."""
        return self._turn_start is not None

    def expired(self) -> Expiry | None:
        """Which limit the session has run into, if any: no activity for too long, or too long in all."""
        return self._session_clock.expired(self.config)

    def touch(self) -> None:
        """The caller did something (any message counts against the idle timeout)."""
        self._session_clock.touch()

    async def append(self, pcm16: bytes) -> None:
        """Hear the next chunk of PCM16 mono audio at the configured input rate."""
        self.touch()
        self._input_samples += len(pcm16) // 2
        samples = self._resampler.feed(pcm16_to_float(pcm16))
        if not len(samples):
            return
        start = self._samples
        self._samples += len(samples)
        self._recent.append((start, samples))
        if self._turns is None:
            if self._turn_start is None:
                await self._start_turn(start)
        else:
            await self._detect_turns(samples)
        if self._turn_start is not None:
            await self._send_until(
                self._samples if self._turns is None else self._heard_until(self._samples, PHRASE_CUT_MIN_MS)
            )
        self._trim_recent()

    async def _detect_turns(self, samples: np.ndarray) -> None:
        assert self._vad is not None and self._turns is not None
        first_window = self._vad.windows_seen
        probabilities = await self._vad.probabilities(samples)
        threshold = self._turns.params.threshold
        for index, probability in enumerate(probabilities):
            window_end = self._vad_origin + (first_window + index + 1) * WINDOW_SAMPLES
            if probability >= threshold:
                self._speech_until = window_end
            elif self._turn_start is not None and self._is_phrase_pause(window_end):
                await self._end_phrase(window_end)
            elif self._turn_start is not None and self._may_end_turn(window_end):
                await self._prepare_final(window_end)
            for change in self._turns.feed([float(probability)]):
                if isinstance(change, TurnStarted):
                    self._emit(SpeechStarted(change.audio_start_ms / 1000))
                    lead_ms = max(change.onset_ms - SPEECH_PAD_MS, 0)
                    start = max(self._uncommitted_from, self._sample_at(min(change.audio_start_ms, lead_ms)))
                    await self._start_turn(start)
                elif isinstance(change, TurnEnded) and self._turn_start is not None:
                    # Padded from where the VAD ended the speech (its hysteresis keeps a fading word in).
                    speech_end = self._sample_at(change.audio_end_ms)
                    if self._prepared_after != self._speech_until:
                        # (A prepared final decode is of the turn as sent: more padding would drop it.)
                        await self._send_until(self._heard_until(window_end, TRAILING_PAD_MS, speech_end))
                    self._emit(SpeechStopped(change.audio_end_ms / 1000))
                    # What follows the judged window may open the next turn (its prefix padding): where that
                    # may start depends on the audio, not on how much of it the chunk held.
                    await self._end_turn(heard_until=window_end)

    def _is_phrase_pause(self, window_end: int) -> bool:
        paused_ms = self._ms(window_end - self._speech_until)
        phrase_ms = self._ms(self._speech_until - self._phrase_start)
        if phrase_ms >= LONG_PHRASE_MS:
            return paused_ms >= LONG_PHRASE_PAUSE_MS
        return paused_ms >= PHRASE_PAUSE_MS and phrase_ms >= MIN_PHRASE_MS

    def _may_end_turn(self, window_end: int) -> bool:
        """Whether the pause has grown long enough to prepare the final decode (once per pause)."""
        after_ms = self.config.prepare_final_after_ms
        return (
            after_ms is not None
            and self._prepared_after != self._speech_until
            and self._speech_until > self._phrase_start
            and self._ms(window_end - self._speech_until) >= after_ms
        )

    async def _prepare_final(self, window_end: int) -> None:
        """Send the pause so far and let the engine start decoding the turn as if it ended here."""
        feed = self._feed
        if feed is None:
            return
        await self._send_until(self._heard_until(window_end, TRAILING_PAD_MS))
        self._prepared_after = self._speech_until
        await feed.prepare_final()

    async def _end_phrase(self, window_end: int) -> None:
        """Flush the turn so far at a pause inside it: its text is final while the person goes on speaking."""
        feed = self._feed
        if feed is None or not feed.turns:
            return
        # The cut goes mid-pause, so both phrases keep some silence around their words (unless a final decode
        # was prepared on this pause: more audio would drop it).
        if self._prepared_after != self._speech_until:
            await self._send_until(
                self._speech_until + self._sample_at(self._ms(window_end - self._speech_until)) // 2
            )
        self._phrase_start = self._sent_until
        current = feed.turns[-1]
        current.ends_turn = False
        feed.turns.append(Turn(offset_s=current.offset_s, text=TurnText(current.text)))
        await feed.finalize()

    def _heard_until(self, judged_until: int, pad_ms: int, speech_end: int = 0) -> int:
        """Where the audio worth sending to the engine ends: the last speech (or `speech_end`, where the VAD
        ended it, if later) plus `pad_ms` of silence, within the audio the VAD has judged (up to sample
        `judged_until`)."""
        if self._speech_until <= self._phrase_start:
            # Nothing heard since the last phrase was cut: more of the pause would be a phrase of silence.
            return self._sent_until
        return min(judged_until, max(self._speech_until, speech_end) + self._sample_at(pad_ms))

    def _restart_turn_detection(self) -> None:
        """Turns start afresh from the VAD's next window (after a commit or clear)."""
        if self._vad is not None and self._turns is not None:
            next_window = self._vad_origin + self._vad.windows_seen * WINDOW_SAMPLES
            self._turns.reset(self._ms(next_window))

    async def _start_turn(self, at_sample: int) -> None:
        feed = await self._engine_feed()
        self._turn_start = at_sample
        self._sent_until = at_sample
        self._phrase_start = at_sample
        feed.turns.append(Turn(offset_s=at_sample / ENGINE_RATE_HZ - feed.sent_s, text=TurnText()))

    async def _send_until(self, end_sample: int) -> None:
        if self._feed is None or end_sample <= self._sent_until:
            return
        chunk = self._audio_between(self._sent_until, end_sample)
        self._sent_until = end_sample
        await self._feed.send(chunk)

    async def _end_turn(self, discard: bool = False, heard_until: int | None = None) -> None:
        self._turn_start = None
        self._uncommitted_from = self._samples if heard_until is None else heard_until
        feed = self._feed
        if feed is None:
            return
        if feed.turns:
            turn = feed.turns[-1]
            turn.discard = turn.discard or discard
            # The turn ends no earlier than its audio, even if the engine reports no times.
            turn.text.end_s = max(turn.text.end_s, self._sent_until / ENGINE_RATE_HZ)
        await feed.finalize()

    async def _engine_feed(self) -> EngineFeed:
        """The engine feed for the next turn; one that failed is closed and replaced."""
        if self._feed is not None and self._feed.failed:
            failed, self._feed = self._feed, None
            await failed.close()
        if self._feed is None:
            self._feed = EngineFeed(
                self.engine.open_stream(self.options), self._emit, self._engine_failed, self._progress
            )
        return self._feed

    def _engine_failed(self, feed: EngineFeed) -> None:
        # The open turn died with the engine stream; the next audio starts a new turn on a new stream.
        if feed is self._feed:
            self._turn_start = None

    async def commit(self) -> None:
        """End the current turn now (without a SpeechStopped); its Finals and UtteranceEnd follow."""
        self.touch()
        if self._turn_start is None:
            await self._start_turn(self._uncommitted_from)
        await self._send_until(self._samples)
        self._restart_turn_detection()
        await self._end_turn()

    async def clear(self) -> None:
        """Drop the audio not yet committed: the open turn's text is never reported."""
        self.touch()
        if self._turn_start is not None:
            await self._end_turn(discard=True)
        self._uncommitted_from = self._samples
        self._restart_turn_detection()

    async def close(self, flush: bool = True) -> None:
        """End the session: flush the open turn (unless the caller is gone), then emit Closed."""
        if self._closed:
            return
        self._closed = True
        if flush and self._turn_start is not None:
            await self._send_until(self._samples)
            await self._end_turn()
        feed = self._feed
        if feed is not None:
            if not flush and self._turn_start is not None and feed.turns:
                feed.turns[-1].discard = True
            await feed.close()
            self._feed = None
        self._emit_closed()

    def abandon(self) -> Awaitable[None] | None:
        """End now without waiting for the engine, even mid-`close`: Closed is emitted at once, nothing more
        is reported, and the returned awaitable stops the engine stream (None when there is none).
        """
        self._closed = True
        self._emit_closed()
        feed, self._feed = self._feed, None
        return feed.abandon() if feed is not None else None

    def _emit_closed(self) -> None:
        if not self._closed_emitted:
            self._closed_emitted = True
            self._emit(Closed())

    async def events(self) -> AsyncIterator[SessionEvent]:
        """Session events in order, ending with Closed."""
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, Closed):
                return

    @property
    def owes_results(self) -> bool:
        """Whether the engine has yet to get through this session's work (the caller waits on the server)."""
        return self._feed is not None and self._feed.owes_results

    @property
    def progress(self) -> int:
        """A count that grows whenever the engine gets through more work (this session's, or any session's
        sharing its EngineProgress)."""
        shared = self._progress.shared
        return (shared or self._progress).count

    @property
    def own_progress(self) -> int:
        """A count that grows whenever the engine gets through more of this session's work."""
        return self._progress.count

    def _emit(self, event: SessionEvent) -> None:
        self._progress.advance()
        self._events.put_nowait(event)

    def _audio_between(self, start: int, end: int) -> np.ndarray:
        # From the newest chunk back: what is sent is recent, and the lookback kept before it may hold
        # hundreds of chunks when they are 1 ms each.
        pieces = []
        for chunk_start, chunk in reversed(self._recent):
            chunk_end = chunk_start + len(chunk)
            if chunk_end <= start:
                break
            if chunk_start >= end:
                continue
            pieces.append(chunk[max(0, start - chunk_start) : min(len(chunk), end - chunk_start)])
        pieces.reverse()
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)

    def _trim_recent(self) -> None:
        vad = self.config.vad
        keep_ms = (max(vad.prefix_padding_ms, SPEECH_PAD_MS) if vad else 0) + LOOKBACK_SLACK_MS
        # Kept back from what the VAD has judged, not from what arrived: a turn found in the next chunk
        # reaches back the same way however long this chunk was.
        judged = (
            self._samples if self._vad is None else self._vad_origin + self._vad.windows_seen * WINDOW_SAMPLES
        )
        keep_from = judged - self._sample_at(keep_ms)
        if self._turn_start is not None:
            keep_from = min(keep_from, self._sent_until)
        while self._recent and self._recent[0][0] + len(self._recent[0][1]) <= keep_from:
            self._recent.popleft()

    @staticmethod
    def _ms(samples: int) -> int:
        return samples * 1000 // ENGINE_RATE_HZ

    @staticmethod
    def _sample_at(ms: int) -> int:
        return ms * ENGINE_RATE_HZ // 1000
