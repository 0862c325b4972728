"""Cutting long audio into pieces a provider accepts (Sarvam's REST: about 30 s), at pauses in the speech.

Silero VAD gives a speech probability per 32 ms window; a cut goes in the middle of the longest pause in
the second half of the allowed length (so pieces are long, and words are not split), else of any pause
in it, else, for speech with no pause at all, at the limit itself.
"""

from __future__ import annotations

import logging

import numpy as np

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.audio.vad import WINDOW_SAMPLES, SileroModel, VadUnavailable

log = logging.getLogger(__name__)

WINDOW_S = WINDOW_SAMPLES / ENGINE_RATE_HZ
SPEECH_THRESHOLD = 0.5
# Hysteresis, as Silero's own iterator: a window is a pause under the threshold less this.
PAUSE_MARGIN = 0.15


def speech_probabilities(audio: Audio) -> np.ndarray | None:
    """Silero's speech probability per 32 ms window of the audio, or None without the VAD model."""
    try:
        return SileroModel.shared().stream().feed(audio.samples)
    except VadUnavailable as e:
        log.warning("no VAD to cut long audio at pauses (%s); cutting at the length limit", e)
        return None


def pause_runs(probabilities: np.ndarray) -> list[tuple[float, float]]:
    """(start, end) in seconds of every run of pause windows."""
    pause = np.concatenate([[False], probabilities < SPEECH_THRESHOLD - PAUSE_MARGIN, [False]])
    edges = np.flatnonzero(np.diff(pause.astype(np.int8)))
    return [(float(a) * WINDOW_S, float(b) * WINDOW_S) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def pieces_at_pauses(
    probabilities: np.ndarray | None, duration_s: float, max_piece_s: float
) -> list[tuple[float, float]]:
    """(start, end) of consecutive pieces covering the audio, none longer than `max_piece_s`."""
    runs = pause_runs(probabilities) if probabilities is not None else []
    pieces = []
    start = 0.0
    while duration_s - start > max_piece_s:
        limit = start + max_piece_s
        cut = _best_cut(runs, start + max_piece_s / 2, limit) or _best_cut(runs, start + WINDOW_S, limit)
        cut = cut if cut is not None else limit
        pieces.append((start, cut))
        start = cut
    pieces.append((start, duration_s))
    return pieces


def has_speech(probabilities: np.ndarray | None, start_s: float, end_s: float) -> bool:
    """Whether any window between two times sounds like speech (always true without the VAD)."""
    if probabilities is None:
        return True
    window = probabilities[int(start_s / WINDOW_S) : int(np.ceil(end_s / WINDOW_S))]
    return bool(len(window)) and float(window.max()) >= SPEECH_THRESHOLD - PAUSE_MARGIN


def _best_cut(runs: list[tuple[float, float]], low_s: float, high_s: float) -> float | None:
    """The middle of the longest pause whose middle lies in [low_s, high_s] (the later one on a tie)."""
    best: tuple[float, float] | None = None
    for run_start, run_end in runs:
        middle = (run_start + run_end) / 2
        if low_s <= middle <= high_s and (best is None or run_end - run_start >= best[0]):
            best = (run_end - run_start, middle)
    return best[1] if best is not None else None
