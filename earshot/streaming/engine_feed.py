"""Feeding one engine stream for a live session, and turning its results into session events.

The session only enqueues audio and finalize marks; one task carries them out in order, so turn events never
wait for a decode, and another reads the stream's results. Each finalize ends one `Turn` entry (a phrase or a
whole turn): its results are shifted onto the session clock, made append-only by its TurnText, and the entry's
`Flushed` becomes an UtteranceEnd when it ends the turn (a PhraseEnd when the turn goes on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.base import EngineError, EngineStream, UpstreamError, abort_stream, prepare_final
from earshot.engines.results import Flushed
from earshot.streaming.events import Error, PhraseEnd, SessionEvent, UtteranceEnd
from earshot.streaming.stability import TurnText

log = logging.getLogger(__name__)

# Seconds of audio a feed queues before the session waits for the engine. Counted in audio, not chunks: a
# client sending 1 ms chunks is held back no sooner than one sending 250 ms chunks.
FEED_QUEUE_LIMIT_S = 8.0


@dataclass(slots=True)
class Turn:
    """Where a turn's engine times sit on the session clock, and whether its results are wanted."""

    offset_s: float
    text: TurnText
    discard: bool = False
    ends_turn: bool = True


@dataclass(slots=True)
class EngineProgress:
    """How much work engine streams have got through, counted across every session that shares the counter
    (and, for a session's own counter, passed on to the `shared` one).

    A flushing session waits while it grows: behind other sessions' decodes its own results may be slow to
    come, but an engine that gets through anyone's work is not stuck.
    """

    count: int = 0
    shared: EngineProgress | None = None

    def advance(self) -> None:
        self.count += 1
        if self.shared is not None:
            self.shared.advance()


class _FinalizeMark:
    """In an engine feed's queue: finalize here."""


class _PrepareMark:
    """In an engine feed's queue: the turn may end here; the stream may start its final decode."""


_FINALIZE = _FinalizeMark()
_PREPARE = _PrepareMark()


class EngineFeed:
    """One engine stream, fed from a queue by one task, and the task that turns its results into events.

    Sessions only enqueue audio and finalize marks, so turn events never wait for the engine; the queue is
    bounded in seconds of audio, so an engine slower than real time holds its caller back instead of piling up
    audio. Audio chunks queued one after another reach the stream as one, however small the caller's chunks.
    """

    def __init__(
        self,
        stream: EngineStream,
        emit: Callable[[SessionEvent], None],
        on_failure: Callable[[EngineFeed], None],
        progress: EngineProgress | None = None,
    ) -> None:
        self.stream = stream
        self.progress = progress or EngineProgress()
        self._on_failure = on_failure
        self.sent_s = 0.0
        self.turns: deque[Turn] = deque()
        self.failed = False
        self._finalizes_owed = 0
        self._emit = emit
        self._commands: deque[np.ndarray | _FinalizeMark | _PrepareMark | None] = deque()
        self._queued_samples = 0
        self._queue_limit_samples = round(FEED_QUEUE_LIMIT_S * ENGINE_RATE_HZ)
        self._queue_changed = asyncio.Condition()
        loop = asyncio.get_running_loop()
        self._feeder = loop.create_task(self._feed())
        self._pump = loop.create_task(self._run())

    async def send(self, samples: np.ndarray) -> None:
        if len(samples):
            async with self._queue_changed:
                await self._queue_changed.wait_for(lambda: self._queued_samples < self._queue_limit_samples)
                self.sent_s += len(samples) / ENGINE_RATE_HZ
                self._queued_samples += len(samples)
                self._commands.append(samples)
                self._queue_changed.notify_all()

    async def finalize(self) -> None:
        self._finalizes_owed += 1
        await self._put(_FINALIZE)

    async def prepare_final(self) -> None:
        """The turn may end with what was sent: let the stream start its final decode (engines that can)."""
        await self._put(_PREPARE)

    async def _put(self, command: _FinalizeMark | _PrepareMark | None) -> None:
        async with self._queue_changed:
            self._commands.append(command)
            self._queue_changed.notify_all()

    @property
    def owes_results(self) -> bool:
        """Whether audio or a finalize is still queued, or a finalize's results have yet to come."""
        return self._finalizes_owed > 0 or bool(self._commands)

    async def _next_command(self) -> np.ndarray | _FinalizeMark | _PrepareMark | None:
        """The next command; audio chunks queued one after another are joined into one."""
        async with self._queue_changed:
            await self._queue_changed.wait_for(lambda: bool(self._commands))
            command = self._commands.popleft()
            if isinstance(command, np.ndarray):
                pieces = [command]
                while self._commands and isinstance(self._commands[0], np.ndarray):
                    pieces.append(self._commands.popleft())  # type: ignore[arg-type]
                command = np.concatenate(pieces) if len(pieces) > 1 else command
                self._queued_samples -= len(command)
            self._queue_changed.notify_all()
            return command

    async def _feed(self) -> None:
        while (command := await self._next_command()) is not None:
            if self.failed:
                continue
            try:
                if isinstance(command, _FinalizeMark):
                    await self.stream.finalize()
                elif isinstance(command, _PrepareMark):
                    await prepare_final(self.stream)
                else:
                    await self.stream.send(Audio(command))
                self.progress.advance()
            except EngineError as e:
                self._fail(e)
            except Exception:
                # An engine bug must not leave the queue unread (the session would wait on it forever).
                log.exception("live engine stream failed unexpectedly")
                self._fail(EngineError("the engine failed"))

    def _fail(self, error: EngineError) -> None:
        if not self.failed:
            self.failed = True
            self._finalizes_owed = 0
            self.turns.clear()
            code = "upstream_error" if isinstance(error, UpstreamError) else "transcription_failed"
            self._emit(Error(code, str(error)))
            self._on_failure(self)

    async def _run(self) -> None:
        try:
            async for result in self.stream.results():
                turn = self.turns[0] if self.turns else None
                if turn is None:
                    continue
                if isinstance(result, Flushed):
                    self._finalizes_owed = max(0, self._finalizes_owed - 1)
                    self.turns.popleft()
                    if not turn.ends_turn and self.turns:
                        # The turn goes on in the next phrase, which starts the clock where this one ended.
                        following = self.turns[0].text
                        following.end_s = max(following.end_s, turn.text.end_s)
                    if not turn.discard:
                        for final in turn.text.flush():
                            self._emit(final)
                        if turn.ends_turn:
                            self._emit(UtteranceEnd(turn.text.end_s))
                        else:
                            self._emit(PhraseEnd(turn.text.end_s))
                elif not turn.discard:
                    for event in turn.text.on_result(result, turn.offset_s):
                        self._emit(event)
        except EngineError as e:
            self._fail(e)
        except Exception:
            log.exception("live engine results failed unexpectedly")
            self._fail(EngineError("the engine failed"))

    async def close(self) -> None:
        """Carry out what is queued, close the stream, and let its last results through."""
        await self._put(None)
        await self._feeder
        try:
            await self.stream.close()
        except EngineError:
            self.failed = True
            self._pump.cancel()
            return
        # results() ends once the stream is closed.
        await self._pump

    async def abandon(self) -> None:
        """Stop at once for a caller who is gone: nothing queued is carried out, nothing more is reported."""
        for turn in self.turns:
            turn.discard = True
        self._feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._feeder
        try:
            await abort_stream(self.stream)
        except EngineError as e:
            log.debug("an abandoned engine stream failed as it ended: %s", e)
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
