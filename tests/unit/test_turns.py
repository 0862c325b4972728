"""Turn detection from scripted window probabilities: when turns start and end, padding, hysteresis."""

from __future__ import annotations

import numpy as np

from earshot.audio.vad import WINDOW_MS, VadParams
from earshot.streaming.turns import TurnDetector, TurnEnded, TurnStarted

SPEECH, SILENCE = 0.9, 0.05


def windows(count: int, probability: float) -> list[float]:
    """`count` consecutive windows (32 ms each) with the same speech probability."""
    return [probability] * count


def test_turn_starts_at_first_speech_and_ends_after_the_silence_duration() -> None:
    detector = TurnDetector(VadParams())
    assert detector.feed(windows(10, SILENCE)) == []
    assert detector.feed(windows(20, SPEECH)[:1]) == [TurnStarted(audio_start_ms=20, onset_ms=320)]
    assert detector.in_speech and detector.speech_since_ms == 20
    assert detector.feed(windows(19, SPEECH)) == []
    # 500 ms of silence is 16 windows (512 ms); after 15 the turn is still open.
    assert detector.feed(windows(15, SILENCE)) == []
    assert detector.in_speech
    assert detector.feed(windows(1, SILENCE)) == [TurnEnded(audio_end_ms=960)]
    assert not detector.in_speech and detector.speech_since_ms is None
    assert detector.feed(windows(50, SILENCE)) == []


def test_prefix_padding_is_clamped_at_the_start_of_audio() -> None:
    detector = TurnDetector(VadParams(prefix_padding_ms=300))
    assert detector.feed([SILENCE, SILENCE, SPEECH]) == [TurnStarted(audio_start_ms=0, onset_ms=64)]


def test_prefix_padding_never_reaches_into_the_previous_turn() -> None:
    detector = TurnDetector(VadParams(prefix_padding_ms=300, silence_duration_ms=200))
    events = detector.feed(windows(10, SPEECH) + windows(7, SILENCE) + windows(5, SPEECH))
    # Turn 1 speech ends at 320 ms; 7 silent windows (224 ms) close it; turn 2 speech begins at 544 ms.
    assert events == [
        TurnStarted(audio_start_ms=0, onset_ms=0),
        TurnEnded(audio_end_ms=320),
        TurnStarted(audio_start_ms=320, onset_ms=544),
    ]


def test_padding_is_full_when_the_previous_turn_is_far_enough_back() -> None:
    detector = TurnDetector(VadParams(prefix_padding_ms=300, silence_duration_ms=200))
    events = detector.feed(windows(10, SPEECH) + windows(20, SILENCE) + windows(1, SPEECH))
    assert events[-1] == TurnStarted(audio_start_ms=960 - 300, onset_ms=960)


def test_probability_just_under_threshold_neither_starts_nor_ends_a_turn() -> None:
    detector = TurnDetector(VadParams(threshold=0.5))
    assert detector.feed(windows(50, 0.45)) == []
    assert not detector.in_speech
    assert detector.feed(windows(1, 0.5)) == [TurnStarted(audio_start_ms=1300, onset_ms=1600)]
    # A long dip to threshold - 0.1 is still speech: hysteresis keeps the turn open.
    assert detector.feed(windows(40, 0.4)) == []
    assert detector.in_speech
    # Below threshold - 0.15 counts as silence and ends the turn where the dip ended.
    assert detector.feed(windows(16, 0.3)) == [TurnEnded(audio_end_ms=1632 + 40 * WINDOW_MS)]


def test_silence_gaps_shorter_than_the_silence_duration_keep_one_turn() -> None:
    detector = TurnDetector(VadParams(silence_duration_ms=500))
    gap = windows(12, SILENCE)  # 384 ms, shorter than 500 ms
    events = detector.feed(windows(5, SPEECH) + gap + windows(2, SPEECH) + gap + windows(3, SPEECH))
    assert events == [TurnStarted(audio_start_ms=0, onset_ms=0)]
    end_of_speech_ms = (5 + 12 + 2 + 12 + 3) * WINDOW_MS
    assert detector.feed(windows(16, SILENCE)) == [TurnEnded(audio_end_ms=end_of_speech_ms)]


def test_flickering_tail_between_the_two_thresholds_still_ends_the_turn() -> None:
    detector = TurnDetector(VadParams(threshold=0.5, silence_duration_ms=320))
    detector.feed(windows(5, SPEECH))
    # Once silence has begun, windows between 0.35 and 0.5 do not restart the count (as in Silero).
    assert detector.feed([0.1, 0.4, 0.1, 0.4, 0.1, 0.4, 0.1, 0.4, 0.1]) == []
    assert detector.feed([0.1]) == [TurnEnded(audio_end_ms=5 * WINDOW_MS)]


def test_lower_threshold_has_a_floor() -> None:
    detector = TurnDetector(VadParams(threshold=0.1, silence_duration_ms=64))
    detector.feed(windows(3, SPEECH))
    assert detector.feed(windows(10, 0.02)) == []  # 0.1 - 0.15 < 0, but 0.02 is above the 0.01 floor
    assert detector.feed(windows(2, 0.005)) == [TurnEnded(audio_end_ms=13 * WINDOW_MS)]


def test_flush_ends_an_open_turn_at_its_last_speech_window() -> None:
    detector = TurnDetector(VadParams())
    detector.feed(windows(3, SILENCE) + windows(4, SPEECH))
    assert detector.flush() == [TurnEnded(audio_end_ms=7 * WINDOW_MS)]
    assert not detector.in_speech
    assert detector.flush() == []

    detector.feed(windows(4, SPEECH) + windows(5, SILENCE))
    assert detector.flush() == [TurnEnded(audio_end_ms=11 * WINDOW_MS)]  # trailing silence left out
    # The next turn's padding stops at the flushed turn's end.
    assert detector.feed(windows(1, SPEECH)) == [
        TurnStarted(audio_start_ms=11 * WINDOW_MS, onset_ms=16 * WINDOW_MS)
    ]


def test_flush_with_no_turn_open_is_empty() -> None:
    detector = TurnDetector(VadParams())
    assert detector.flush() == []
    detector.feed(windows(30, SILENCE))
    assert detector.flush() == []


def test_reset_drops_the_open_turn_and_restarts_the_clock() -> None:
    detector = TurnDetector(VadParams(prefix_padding_ms=300))
    detector.feed(windows(40, SILENCE) + windows(5, SPEECH))
    assert detector.in_speech
    detector.reset(at_ms=2000)
    assert not detector.in_speech and detector.speech_since_ms is None
    # Padding stops at the reset point; window times count from it.
    assert detector.feed(windows(2, SILENCE) + windows(1, SPEECH)) == [
        TurnStarted(audio_start_ms=2000, onset_ms=2064)
    ]
    detector.reset()
    assert detector.feed(windows(20, SILENCE) + windows(1, SPEECH)) == [
        TurnStarted(audio_start_ms=340, onset_ms=640)
    ]


def test_accepts_numpy_probabilities_from_the_vad() -> None:
    detector = TurnDetector(VadParams())
    probabilities = np.array(windows(2, SILENCE) + windows(3, SPEECH), dtype=np.float32)
    assert detector.feed(probabilities) == [TurnStarted(audio_start_ms=0, onset_ms=64)]
    assert detector.feed(np.empty(0, dtype=np.float32)) == []
    assert detector.speech_since_ms == 0
