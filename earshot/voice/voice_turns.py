"""The voice agent's turn loop: a user's turn in, the session's brain answering (the same `Turn` text turns
run), its text cut into sentences as it streams, each sentence synthesized and sent, paced at the output rate.

No wire format lives here: the loop emits `VoiceEvent`s and a channel (the Realtime conversation socket)
renders them. One response runs at a time and holds the session's turn lock. Cancelling it (barge-in,
`response.cancel`) bumps the generation counter first, so nothing a cancelled response still makes gets out,
then stops the chat stream and the synthesis; its assistant item is kept as far as it was heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from earshot.closing import closing
from earshot.engines.base import EngineError
from earshot.routing.gate import ServerBusy
from earshot.store.records import NewItem
from earshot.voice.conversation import assistant_message, new_id
from earshot.voice.playback import Playback
from earshot.voice.spoken import PCM_BYTES_PER_MS, FillerTimer, SentenceCutter, SpokenAnswer
from earshot.voice.turn import (
    ApprovalRequested,
    AssistantText,
    AssistantTextDone,
    CallReady,
    NoChatModel,
    TurnEnded,
    TurnEvent,
)
from earshot.voice.turn_lock import SessionBusy, TurnLocks
from earshot.voice.voice_events import (
    AnswerAudio,
    AnswerDone,
    AnswerStarted,
    AnswerText,
    ApprovalOut,
    CallOut,
    ResponseFinished,
    ResponseStarted,
    TurnRefused,
    VoiceEvent,
)
from earshot.voice.voices import UnknownVoice

log = logging.getLogger(__name__)

# Audio goes out in deltas of this many ms, at most LEAD_MS ahead of real time (what a client buffers), so a
# barge-in leaves little queued on the client to skip.
AUDIO_DELTA_MS = 100
LEAD_MS = 600


class Brain(Protocol):
    """One turn of the session's conversation (`voice.turn.Turn`, or a fake in tests)."""

    response_id: str
    prompt_tokens: int
    completion_tokens: int

    def run(self, opening: list[NewItem], announce: list[dict[str, Any]]) -> AsyncIterator[TurnEvent]: ...


Speak = Callable[[str], AsyncIterator[bytes]]
# Given the approval requests a turn waits on: the items that continue it (the decisions, a denied call's
# output) and the approved calls to announce, once any is decided; None while none is.
Continuation = tuple[list[NewItem], list[dict[str, Any]]]
Decided = Callable[[tuple[str, ...]], Awaitable[Continuation | None]]
# How often a turn that waits for a person's decision looks for it (it may come over HTTP, from any worker).
DECISION_POLL_S = 0.2


@dataclass(slots=True)
class _Response:
    generation: int
    task: asyncio.Task[None]
    response_id: str | None = None
    answer: SpokenAnswer | None = None
    output: list[dict[str, Any]] = field(default_factory=list)
    brain: Brain | None = None


class VoiceTurns:
    """The responses of one voice conversation, one at a time."""

    def __init__(
        self,
        session_id: str,
        locks: TurnLocks,
        new_brain: Callable[[], Brain],
        speak: Speak,
        store: Callable[[list[NewItem]], Awaitable[None]],
        emit: Callable[[VoiceEvent], Awaitable[None]],
        *,
        rewrite: Callable[[NewItem], Awaitable[None]] | None = None,
        decided: Decided | None = None,
        filler: str = "One moment.",
        filler_after_ms: int = 1500,
        lead_ms: int = LEAD_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session_id = session_id
        self.locks = locks
        self.new_brain = new_brain
        self.speak = speak
        self.store = store
        self.emit = emit
        self.rewrite = rewrite
        self.decided = decided
        self.filler = filler
        self.filler_timer = FillerTimer(filler_after_ms)
        self.lead_ms = lead_ms
        self.clock = clock
        self.text_only = False
        # Bumped by every cancel: output made under an older generation is dropped.
        self.generation = 0
        self.characters = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._response: _Response | None = None
        self._filler_task: asyncio.Task[None] | None = None
        # The last cancelled answer, cut to what was heard: stored before the next turn (a truncate may still
        # cut it shorter) or when the conversation closes.
        self._cut: SpokenAnswer | None = None
        self._cut_played_ms: int | None = None
        # The last answer that went out whole, already stored: a client still playing it when the person spoke
        # over it truncates it, and the stored item is then cut to what was heard.
        self._spoken: SpokenAnswer | None = None

    @property
    def in_flight(self) -> bool:
        """Whether a response is running."""
        return self._response is not None and not self._response.task.done()

    def respond(self, opening: list[NewItem], announce: list[dict[str, Any]] | None = None) -> bool:
        """Start a response to `opening` (the user's item, a call's output); False when one is running."""
        if self.in_flight:
            return False
        self._stop_filler()
        self._spoken = None
        generation = self.generation
        task = asyncio.create_task(self._run(generation, opening, list(announce or ())))
        self._response = _Response(generation, task)
        return True

    async def cancel(self, announce: bool = True) -> bool:
        """Cancel the running response at once (barge-in, response.cancel); False when none runs.

        `announce`: say so with its `response.done` (not when the conversation closes: nobody hears it)."""
        response = self._response
        if self._filler_task is not None and not self._filler_task.done():
            self.generation += 1
            self._stop_filler()
        if response is None or response.task.done():
            return False
        self.generation += 1
        response.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await response.task
        if response.answer is not None and response.answer.sentences:
            self._cut = response.answer
            heard = assistant_message(response.answer.item_id, response.answer.heard())
            response.output.append(heard.data)
        if response.response_id is not None and announce:
            usage = self._usage(response.brain)
            await self.emit(ResponseFinished(response.response_id, "cancelled", response.output, usage))
        return True

    async def truncate(self, item_id: str, audio_end_ms: int) -> bool:
        """The client played only `audio_end_ms` of this item: history keeps what was heard of it."""
        if self._cut is not None and self._cut.item_id == item_id:
            self._cut_played_ms = audio_end_ms
            return True
        spoken = self._spoken
        if spoken is None or spoken.item_id != item_id or self.rewrite is None:
            return False
        if audio_end_ms < spoken.audio_ms:
            self._spoken = None
            await self.rewrite(assistant_message(item_id, spoken.heard(audio_end_ms)))
        return True

    async def close(self) -> None:
        """End the conversation: cancel what runs, store the last cut answer."""
        self._stop_filler()
        await self.cancel(announce=False)
        await self._store_cut()

    async def _store_cut(self) -> None:
        cut, self._cut = self._cut, None
        played_ms, self._cut_played_ms = self._cut_played_ms, None
        if cut is None:
            return
        heard = cut.heard(played_ms)
        if heard:
            await self.store([assistant_message(cut.item_id, heard)])

    def _usage(self, brain: Brain | None) -> dict[str, int]:
        prompt = brain.prompt_tokens if brain is not None else 0
        completion = brain.completion_tokens if brain is not None else 0
        return {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}

    async def _out(self, generation: int, event: VoiceEvent) -> None:
        if generation != self.generation:
            raise asyncio.CancelledError
        await self.emit(event)

    async def _run(self, generation: int, opening: list[NewItem], announce: list[dict[str, Any]]) -> None:
        response = self._response
        # respond() sets _response right after creating the task, before the task first runs.
        assert response is not None
        try:
            async with self.locks.hold(self.session_id):
                await self._store_cut()
                waiting = await self._think(generation, response, opening, announce)
                # A call waiting for a person's approval keeps the session: the decision (by this socket or
                # over HTTP, whichever is first) continues the turn here, in a response of its own.
                while waiting and self.decided is not None:
                    continuation = await self.decided(waiting)
                    if continuation is None:
                        await asyncio.sleep(DECISION_POLL_S)
                        continue
                    response.response_id, response.answer, response.output = None, None, []
                    waiting = await self._think(generation, response, *continuation)
        except SessionBusy as e:
            await self._out(generation, TurnRefused("conversation_busy", str(e)))
        except NoChatModel as e:
            await self._failed(generation, response, "no_chat_model", str(e))
        except (EngineError, ServerBusy) as e:
            log.error("voice session %s: the response failed: %s", self.session_id, e)
            code = "server_busy" if isinstance(e, ServerBusy) else "upstream_error"
            await self._failed(generation, response, code, str(e))
        except UnknownVoice as e:
            await self._failed(generation, response, "invalid_value", str(e))
        except Exception:
            # The response has started: its failure can only be told as a failed response.done.
            incident = uuid.uuid4().hex[:12]
            log.exception("voice session %s: the response failed incident=%s", self.session_id, incident)
            await self._failed(
                generation, response, "internal_error", f"internal server error (incident {incident})"
            )

    async def _think(
        self, generation: int, response: _Response, opening: list[NewItem], announce: list[dict[str, Any]]
    ) -> tuple[str, ...]:
        brain = response.brain = self.new_brain()
        try:
            return await self._answer(generation, response, brain, opening, announce)
        finally:
            self.prompt_tokens += brain.prompt_tokens
            self.completion_tokens += brain.completion_tokens

    async def _failed(self, generation: int, response: _Response, code: str, message: str) -> None:
        response_id = response.response_id or new_id("resp")
        if response.response_id is None:
            await self._out(generation, ResponseStarted(response_id))
        usage = self._usage(response.brain)
        await self._out(
            generation, ResponseFinished(response_id, "failed", response.output, usage, (code, message))
        )

    async def _answer(
        self,
        generation: int,
        response: _Response,
        brain: Brain,
        opening: list[NewItem],
        announce: list[dict[str, Any]],
    ) -> tuple[str, ...]:
        """Run one brain turn out loud; returns the approval requests it now waits on."""
        waiting: tuple[str, ...] = ()
        response.response_id = brain.response_id
        await self._out(generation, ResponseStarted(brain.response_id))
        cutter = SentenceCutter()
        playback = Playback(self.clock, self.lead_ms)
        async with closing(brain.run(opening, announce)) as events:
            async for event in events:
                if isinstance(event, AssistantText):
                    answer = response.answer
                    if answer is None or answer.item_id != event.item_id:
                        answer = response.answer = SpokenAnswer(event.item_id, with_audio=not self.text_only)
                        await self._out(generation, AnswerStarted(brain.response_id, event.item_id))
                    if self.text_only:
                        answer.text_sent(event.delta)
                        await self._out(generation, AnswerText(brain.response_id, event.item_id, event.delta))
                        continue
                    for sentence in cutter.feed(event.delta):
                        await self._say(generation, brain.response_id, answer, sentence, playback)
                elif isinstance(event, AssistantTextDone):
                    if response.answer is not None and not self.text_only:
                        for sentence in cutter.finish():
                            await self._say(
                                generation, brain.response_id, response.answer, sentence, playback
                            )
                    response.output.append(event.item)
                    await self._out(generation, AnswerDone(brain.response_id, event.item, event.text))
                    if response.answer is not None and response.answer.with_audio:
                        self._spoken = response.answer
                    response.answer = None
                elif isinstance(event, CallReady):
                    response.output.append(event.item)
                    await self._out(generation, CallOut(brain.response_id, event.item))
                elif isinstance(event, ApprovalRequested):
                    response.output.append(event.item)
                    question = f"May I go ahead with {event.item.get('name', 'that')}?"
                    asking = SpokenAnswer(new_id("item"), with_audio=not self.text_only)
                    await self._out(generation, AnswerStarted(brain.response_id, asking.item_id))
                    if self.text_only:
                        await self._out(generation, AnswerText(brain.response_id, asking.item_id, question))
                    else:
                        await self._say(generation, brain.response_id, asking, question, playback)
                    asked = assistant_message(asking.item_id, question).data
                    await self._out(generation, AnswerDone(brain.response_id, asked, question))
                    await self._out(generation, ApprovalOut(brain.response_id, event.item))
                elif isinstance(event, TurnEnded):
                    waiting = event.waiting.approvals
                    if event.waiting.outputs:
                        self.filler_timer.call_started(self.clock())
                        self._start_filler()
                    usage = self._usage(brain)
                    await self._out(
                        generation, ResponseFinished(brain.response_id, "completed", event.output, usage)
                    )
        return waiting

    async def _say(
        self, generation: int, response_id: str, answer: SpokenAnswer, sentence: str, playback: Playback
    ) -> None:
        answer.sentence_started(sentence)
        self.characters += len(sentence)
        await self._out(generation, AnswerText(response_id, answer.item_id, sentence + " "))
        async with closing(self.speak(sentence)) as audio:
            async for pcm16 in audio:
                for start in range(0, len(pcm16), AUDIO_DELTA_MS * PCM_BYTES_PER_MS):
                    chunk = pcm16[start : start + AUDIO_DELTA_MS * PCM_BYTES_PER_MS]
                    await playback.wait_for_room()
                    await self._out(generation, AnswerAudio(response_id, answer.item_id, chunk))
                    answer.audio_sent(len(chunk))
                    playback.sent(len(chunk) // PCM_BYTES_PER_MS)
        answer.sentence_done()

    # --- the filler while a client's tool call runs ---

    def call_answered(self) -> None:
        """The client gave a call's output: no filler for it any more."""
        self.filler_timer.call_answered()
        self._stop_filler()

    def _start_filler(self) -> None:
        self._stop_filler()
        self._filler_task = asyncio.create_task(self._speak_filler_when_due())

    def _stop_filler(self) -> None:
        if self._filler_task is not None and not self._filler_task.done():
            self._filler_task.cancel()
        self._filler_task = None

    async def _speak_filler_when_due(self) -> None:
        wait_s = self.filler_timer.wait_s(self.clock())
        while wait_s is not None and wait_s > 0:
            await asyncio.sleep(wait_s)
            wait_s = self.filler_timer.wait_s(self.clock())
        if not self.filler_timer.due(self.clock()) or self.in_flight:
            return
        # The filler is said outside the conversation (it is not the model's): a response of its own.
        generation, response_id = self.generation, new_id("resp")
        answer = SpokenAnswer(new_id("item"), with_audio=not self.text_only)
        await self._out(generation, ResponseStarted(response_id))
        await self._out(generation, AnswerStarted(response_id, answer.item_id))
        if self.text_only:
            await self._out(generation, AnswerText(response_id, answer.item_id, self.filler))
        else:
            await self._say(generation, response_id, answer, self.filler, Playback(self.clock, self.lead_ms))
        item = assistant_message(answer.item_id, self.filler).data
        await self._out(generation, AnswerDone(response_id, item, self.filler))
        await self._out(generation, ResponseFinished(response_id, "completed", [item], self._usage(None)))
