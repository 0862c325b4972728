"""The voice agent's turn loop with a fake brain and a fake synthesizer: sentences cut as the answer streams,
barge-in dropping a cancelled response's late output, history cut to what was heard, the filler's timing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from earshot.store.records import NewItem
from earshot.voice.conversation import Waiting, assistant_message, new_id
from earshot.voice.spoken import PCM_BYTES_PER_MS, FillerTimer, SentenceCutter, SpokenAnswer
from earshot.voice.turn import AssistantText, AssistantTextDone, CallReady, TurnEnded, TurnEvent
from earshot.voice.turn_lock import MemoryTurnLocks
from earshot.voice.voice_events import (
    AnswerAudio,
    AnswerText,
    CallOut,
    ResponseFinished,
    TurnRefused,
    VoiceEvent,
)
from earshot.voice.voice_turns import VoiceTurns
from earshot.voice.voices import UnknownVoice

MS_PER_CHAR = 10  # the fake synthesizer speaks 10 ms of audio per character


def test_sentences_leave_as_soon_as_the_next_one_begins() -> None:
    cutter = SentenceCutter()
    said: list[str] = []
    for delta in ["Hello the", "re. How are ", "you today? I am", " fine."]:
        said += cutter.feed(delta)
    assert said == ["Hello there.", "How are you today?"]
    assert cutter.finish() == ["I am fine."]


def test_a_cut_off_answer_keeps_what_was_heard() -> None:
    answer = SpokenAnswer("item_1")
    for sentence in ["One two three.", "Four five six seven."]:
        answer.sentence_started(sentence)
        answer.audio_sent(1000 * PCM_BYTES_PER_MS)
        answer.sentence_done()
    assert answer.heard() == "One two three. Four five six seven."
    assert answer.heard(played_ms=1500) == "One two three. Four five"
    assert answer.heard(played_ms=400) == "One"
    assert answer.heard(played_ms=0) == ""


def test_the_filler_is_due_once_after_its_delay() -> None:
    timer = FillerTimer(after_ms=1500)
    assert timer.wait_s(now=10.0) is None, "no call, no filler"
    timer.call_started(now=10.0)
    assert not timer.due(now=11.0)
    assert timer.wait_s(now=11.0) == pytest.approx(0.5)
    assert timer.due(now=11.5)
    assert not timer.due(now=20.0), "spoken once"
    timer.call_answered()
    timer.call_started(now=30.0)
    assert not timer.due(now=30.1)
    timer.call_answered()
    assert not timer.due(now=40.0), "answered in time: no filler"


class FakeBrain:
    """Answers with `text` in `pieces`, waiting on `gate` between them when given; or calls a tool."""

    def __init__(self, text: str, pieces: int = 4, gate: asyncio.Event | None = None, call: bool = False):
        self.text = text
        self.pieces = pieces
        self.gate = gate
        self.call = call
        self.response_id = new_id("resp")
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.closed = False

    async def run(self, opening: list[NewItem], announce: list[dict[str, Any]]) -> AsyncIterator[TurnEvent]:
        try:
            item_id = new_id("item")
            size = -(-len(self.text) // self.pieces)
            for start in range(0, len(self.text), size):
                yield AssistantText(item_id, self.text[start : start + size])
                if self.gate is not None:
                    await self.gate.wait()
            message = assistant_message(item_id, self.text).data
            yield AssistantTextDone(message, self.text)
            output = [message]
            waiting = Waiting((), ())
            if self.call:
                call = {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}"}
                yield CallReady(call)
                output.append(call)
                waiting = Waiting(("call_1",), ())
            self.prompt_tokens, self.completion_tokens = 12, 7
            yield TurnEnded(output, waiting)
        finally:
            self.closed = True


async def fake_speak(text: str) -> AsyncIterator[bytes]:
    for word in text.split():
        await asyncio.sleep(0)
        yield b"\x01\x00" * (len(word) * MS_PER_CHAR * PCM_BYTES_PER_MS // 2)


class Harness:
    def __init__(self, brain: FakeBrain, locks: MemoryTurnLocks | None = None, **options: Any) -> None:
        self.brain = brain
        self.events: list[VoiceEvent] = []
        self.changed = asyncio.Event()
        self.stored: list[NewItem] = []
        self.rewritten: list[NewItem] = []
        self.locks = locks or MemoryTurnLocks()
        self.turns = VoiceTurns(
            "sess_1",
            self.locks,
            lambda: brain,
            fake_speak,
            self._store,
            self._emit,
            rewrite=self._rewrite,
            lead_ms=10**9,
            **options,
        )

    async def _store(self, items: list[NewItem]) -> None:
        self.stored += items

    async def _rewrite(self, item: NewItem) -> None:
        self.rewritten.append(item)

    async def _emit(self, event: VoiceEvent) -> None:
        self.events.append(event)
        self.changed.set()

    async def until(self, ready: Callable[[], object]) -> None:
        """Wait (bounded) until `ready()` holds of the events so far."""
        async with asyncio.timeout(10):
            while not ready():
                self.changed.clear()
                await self.changed.wait()

    def of(self, kind: type) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    async def finished(self) -> ResponseFinished:
        await self.until(lambda: self.of(ResponseFinished))
        return self.of(ResponseFinished)[-1]


async def test_an_answer_is_spoken_sentence_by_sentence_with_its_transcript() -> None:
    harness = Harness(FakeBrain("The sky is blue. Grass is green."))
    assert harness.turns.respond([])
    done = await harness.finished()
    assert done.status == "completed"
    assert [event.delta for event in harness.of(AnswerText)] == ["The sky is blue. ", "Grass is green. "]
    audio = b"".join(event.pcm16 for event in harness.of(AnswerAudio))
    assert len(audio) == len("Theskyisblue.Grassisgreen.") * MS_PER_CHAR * PCM_BYTES_PER_MS
    assert harness.turns.characters == len("The sky is blue.") + len("Grass is green.")
    assert done.usage["total_tokens"] == 19


async def test_text_only_sends_the_text_and_no_audio() -> None:
    harness = Harness(FakeBrain("The sky is blue. Grass is green."))
    harness.turns.text_only = True
    harness.turns.respond([])
    assert (await harness.finished()).status == "completed"
    assert "".join(event.delta for event in harness.of(AnswerText)) == "The sky is blue. Grass is green."
    assert not harness.of(AnswerAudio)


async def test_barge_in_drops_every_later_piece_and_keeps_what_was_heard() -> None:
    gate = asyncio.Event()
    harness = Harness(
        FakeBrain("First sentence here. Second one now. Third never said.", pieces=2, gate=gate)
    )
    harness.turns.respond([])
    first_ms = len("Firstsentencehere.") * MS_PER_CHAR
    await harness.until(
        lambda: sum(len(a.pcm16) for a in harness.of(AnswerAudio)) == first_ms * PCM_BYTES_PER_MS
    )
    generation = harness.turns.generation
    assert await harness.turns.cancel()
    assert harness.turns.generation == generation + 1
    gate.set()
    await asyncio.sleep(0.05)
    done = harness.of(ResponseFinished)
    assert [d.status for d in done] == ["cancelled"], "one response.done, cancelled"
    assert harness.events[-1] is done[0], "nothing of the response after its response.done"
    assert harness.brain.closed, "the chat stream was stopped"
    heard = done[0].output[0]["content"][0]["text"]
    assert heard == "First sentence here."
    await harness.turns.truncate(done[0].output[0]["id"], audio_end_ms=len("Firstsentence") * MS_PER_CHAR)
    await harness.turns.close()
    assert [item.data["content"][0]["text"] for item in harness.stored] == ["First sentence"]


async def test_an_answer_sent_whole_but_played_only_in_part_is_cut_in_history_by_the_truncate() -> None:
    harness = Harness(FakeBrain("The sky is blue. Grass is green."))
    harness.turns.respond([])
    done = await harness.finished()
    item_id = done.output[0]["id"]
    # All of it was sent (the client buffers ahead); the person spoke over it while "Grass" played.
    assert await harness.turns.truncate(item_id, audio_end_ms=len("Theskyisblue.Grass") * MS_PER_CHAR)
    assert [(item.data["id"], item.data["content"][0]["text"]) for item in harness.rewritten] == [
        (item_id, "The sky is blue. Grass")
    ]
    assert not await harness.turns.truncate("item_unknown", audio_end_ms=0)


async def test_a_turn_while_another_holds_the_session_is_refused() -> None:
    locks = MemoryTurnLocks()
    harness = Harness(FakeBrain("Hello."), locks=locks)
    async with locks.hold("sess_1"):
        harness.turns.respond([])
        await harness.until(lambda: harness.events)
    assert [type(event) for event in harness.events] == [TurnRefused]
    assert harness.events[0].code == "conversation_busy"


async def test_a_slow_tool_call_gets_the_filler_once() -> None:
    harness = Harness(FakeBrain("Let me look.", call=True), filler="One moment.", filler_after_ms=20)
    harness.turns.respond([])
    await harness.finished()
    assert harness.of(CallOut)
    await harness.until(lambda: len(harness.of(ResponseFinished)) == 2)
    await asyncio.sleep(0.05)
    fillers = [event for event in harness.of(AnswerText) if event.delta == "One moment. "]
    assert len(fillers) == 1
    assert not [item for item in harness.stored if "One moment" in str(item.data)], (
        "the filler is not history"
    )


async def test_a_synthesis_that_fails_ends_the_response_failed_and_frees_the_session() -> None:
    async def unknown_voice(text: str) -> AsyncIterator[bytes]:
        raise UnknownVoice("nobody")
        yield b""

    harness = Harness(FakeBrain("Hello there. Bye."))
    harness.turns.speak = unknown_voice
    harness.turns.respond([])
    done = await harness.finished()
    assert done.status == "failed" and done.error is not None and done.error[0] == "invalid_value"
    assert not harness.turns.in_flight
    async with harness.locks.hold("sess_1"):
        pass
