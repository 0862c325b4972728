"""Cutting long audio into provider-sized pieces at pauses, from VAD probabilities given by hand."""

from __future__ import annotations

import numpy as np

from earshot.engines.sarvam_pieces import WINDOW_S, has_speech, pieces_at_pauses


def probabilities(seconds: float, pauses: list[tuple[float, float]]) -> np.ndarray:
    """Speech everywhere except in the given (start, end) pauses."""
    windows = np.full(round(seconds / WINDOW_S), 0.9, dtype=np.float32)
    for start, end in pauses:
        windows[round(start / WINDOW_S) : round(end / WINDOW_S)] = 0.05
    return windows


def test_short_audio_is_one_piece() -> None:
    assert pieces_at_pauses(probabilities(20, []), 20.0, 29.0) == [(0.0, 20.0)]


def test_the_cut_goes_in_the_longest_pause_of_the_second_half() -> None:
    pieces = pieces_at_pauses(probabilities(50, [(10, 12), (20, 20.5), (25, 26)]), 50.0, 29.0)
    assert len(pieces) == 2
    assert 25.4 < pieces[0][1] < 25.6  # the 1 s pause beats the 0.5 s one; the 2 s one is too early
    assert pieces[1] == (pieces[0][1], 50.0)


def test_an_early_pause_is_used_when_the_second_half_has_none() -> None:
    pieces = pieces_at_pauses(probabilities(40, [(5, 6)]), 40.0, 29.0)
    assert 5.4 < pieces[0][1] < 5.6 and all(end - start <= 29.0 for start, end in pieces)


def test_speech_without_pauses_is_cut_at_the_limit() -> None:
    pieces = pieces_at_pauses(probabilities(70, []), 70.0, 29.0)
    assert pieces == [(0.0, 29.0), (29.0, 58.0), (58.0, 70.0)]


def test_pieces_of_silence_hold_no_speech() -> None:
    windows = probabilities(40, [(30, 40)])
    assert has_speech(windows, 0, 30) and not has_speech(windows, 30.5, 40)
