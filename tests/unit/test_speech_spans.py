"""Speech pieces of a whole recording: what one-shot Whisper decodes, and what it never sees."""

from __future__ import annotations

import numpy as np

from earshot.audio.decode import decode_audio
from earshot.audio.speech_spans import SpanParams, pack_spans, spans_from_probabilities, speech_pieces
from tests.conftest import shared_audio

WINDOW_S = 0.032


def test_silence_and_white_noise_hold_no_speech() -> None:
    rng = np.random.default_rng(7)
    assert speech_pieces(np.zeros(16_000 * 5, np.float32)) == []
    assert speech_pieces((rng.standard_normal(16_000 * 5) * 0.1).astype(np.float32)) == []
    assert speech_pieces(np.zeros(0, np.float32)) == []


def test_speech_is_covered_with_padding_and_stays_inside_the_audio() -> None:
    audio = decode_audio(shared_audio("jfk/jfk.flac").read_bytes())
    pieces = speech_pieces(audio.samples)
    assert pieces, "JFK's speech is found"
    assert pieces[0].start < 0.6 and pieces[-1].end > 10.0
    assert all(0 <= piece.start < piece.end <= audio.duration_s for piece in pieces)
    # JFK speaks most of the 11 s; the pauses between his phrases are not counted as speech.
    assert 6.0 < sum(piece.speech_s for piece in pieces) < 10.5


def test_long_silence_is_read_in_blocks_and_found_empty() -> None:
    # Ten minutes: windows are built block by block, never as one recording-sized matrix.
    assert speech_pieces(np.zeros(16_000 * 600, np.float32)) == []


def test_spans_need_enough_silence_to_end_and_are_padded_and_merged() -> None:
    params = SpanParams(min_silence_s=0.2, pad_s=0.1, min_speech_s=0.05)
    speech, quiet = [0.9] * 10, [0.0] * 10  # 0.32 s each
    probabilities = np.array(quiet + speech + [0.0] * 3 + speech + quiet * 3, np.float32)
    spans = spans_from_probabilities(probabilities, len(probabilities) * WINDOW_S, params)
    # The three-window dip (0.096 s) is shorter than min_silence_s: one span, padded on both sides.
    assert len(spans) == 1
    start, end = spans[0]
    assert abs(start - (10 * WINDOW_S - 0.1)) < 1e-6
    assert abs(end - (33 * WINDOW_S + 0.1)) < 1e-6


def test_a_blip_shorter_than_min_speech_is_dropped() -> None:
    probabilities = np.array([0.0] * 20 + [0.9] + [0.0] * 40, np.float32)
    assert spans_from_probabilities(probabilities, 61 * WINDOW_S, SpanParams(min_speech_s=0.1)) == []


def test_pieces_join_close_spans_up_to_the_longest_piece() -> None:
    params = SpanParams(merge_gap_s=1.0, max_piece_s=10.0)
    spans = [(0.0, 3.0), (3.5, 6.0), (6.5, 9.0), (9.5, 12.0), (20.0, 21.0), (21.5, 50.0)]
    assert pack_spans(spans, params) == [(0.0, 9.0), (9.5, 12.0), (20.0, 21.0), (21.5, 50.0)]
