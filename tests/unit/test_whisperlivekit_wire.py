"""WhisperLiveKit's /asr protocol, client side, fed states by hand: progress, pacing, flushes, no repeats."""

from __future__ import annotations

from typing import Any

import pytest

from earshot.engines.results import Final, Flushed, Partial
from earshot.engines.whisperlivekit_wire import WhisperLiveKitProtocol, seconds_of


def state(lines: list[tuple[str, str, str]], buffer: str, remaining: float) -> dict[str, Any]:
    return {
        "status": "active_transcription",
        "lines": [{"speaker": 1, "text": t, "start": s, "end": e} for t, s, e in lines],
        "buffer_transcription": buffer,
        "remaining_time_transcription": remaining,
    }


def test_line_times_are_read_from_clock_strings() -> None:
    assert seconds_of("0:01:05") == 65.0
    assert seconds_of(2.5) == 2.5


def test_progress_is_wall_time_since_the_first_audio_less_the_reported_lag() -> None:
    protocol = WhisperLiveKitProtocol(max_lead_s=1.0, finalize_grace_s=1.0, interim_results=True)
    protocol.audio_sent(5.0, now=100.0)
    protocol.on_state(state([], "", remaining=1.5), now=104.0)
    assert protocol.reported_progress_s == 2.5
    # 5 s sent, 2.5 s processed: another 0.1 s would put the server 2.6 s behind, over the 1 s lead.
    assert protocol.wait_before_sending_s(0.1, now=104.0) == pytest.approx(1.6)


def test_a_flush_finalizes_the_buffer_and_its_later_commit_is_not_repeated() -> None:
    protocol = WhisperLiveKitProtocol(max_lead_s=2.0, finalize_grace_s=1.0, interim_results=True)
    protocol.audio_sent(2.0, now=0.0)
    assert protocol.finalize(now=2.0) == []  # the server has not caught up yet
    results = protocol.on_state(state([("hello", "0:00:00", "0:00:01")], "big world", 0.0), now=2.0)
    assert results == [Final("hello", 0.0, 1.0), Final("big world", 1.0, 2.0), Flushed()]
    protocol.audio_sent(1.0, now=2.0)
    results = protocol.on_state(state([("hello big world again", "0:00:00", "0:00:03")], "", 0.0), now=3.0)
    assert [r.text for r in results if isinstance(r, Final)] == ["again"]


def test_partials_show_the_buffer_past_what_was_flushed() -> None:
    protocol = WhisperLiveKitProtocol(max_lead_s=2.0, finalize_grace_s=1.0, interim_results=True)
    protocol.audio_sent(1.0, now=0.0)
    protocol.finalize(now=1.0)
    protocol.on_state(state([], "one two", 0.0), now=1.0)
    results = protocol.on_state(state([], "one two three", 0.0), now=1.2)
    assert [r.text for r in results if isinstance(r, Partial)] == ["three"]


def test_ready_to_stop_makes_everything_final_and_answers_every_finalize() -> None:
    protocol = WhisperLiveKitProtocol(max_lead_s=2.0, finalize_grace_s=10.0, interim_results=False)
    protocol.audio_sent(3.0, now=0.0)
    protocol.finalize(now=0.5)
    protocol.on_state(state([("a b", "0:00:00", "0:00:01")], "c", 2.0), now=0.6)
    results = protocol.on_stopped()
    assert [type(r) for r in results] == [Final, Flushed]
    assert [r.text for r in results if isinstance(r, Final)] == ["c"]
