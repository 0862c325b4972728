"""Where the speech is in a whole recording: Silero VAD spans, padded, merged and packed into decode pieces.

One-shot engines that decode fixed windows (Whisper pads everything to 30 s) use this to skip silence and
noise, where they would otherwise invent words, and to cut long audio into pieces that decode on every worker
at once. Spans are found with the same hysteresis as live turn detection: speech starts at a window over
`threshold` and ends after `min_silence_s` under `threshold - 0.15`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from earshot.audio.pcm import ENGINE_RATE_HZ
from earshot.audio.vad import WINDOW_SAMPLES, SileroModel

HYSTERESIS = 0.15
# Audio is fed to the VAD in blocks, so an hour-long upload never builds one hour-sized window matrix.
BLOCK_SAMPLES = WINDOW_SAMPLES * 1024


@dataclass(frozen=True, slots=True)
class SpanParams:
    """How speech spans are found and packed; times in seconds."""

    threshold: float = 0.5
    min_speech_s: float = 0.1
    min_silence_s: float = 0.5
    pad_s: float = 0.4
    # Spans closer than this decode together (Whisper reads a short pause better in context than alone).
    merge_gap_s: float = 2.0
    max_piece_s: float = 30.0


def speech_probabilities(samples: np.ndarray, model: SileroModel | None = None) -> np.ndarray:
    """Silero's speech probability for every 32 ms window of 16 kHz mono samples."""
    return block_probabilities(
        (samples[i : i + BLOCK_SAMPLES] for i in range(0, len(samples), BLOCK_SAMPLES)), model
    )


def block_probabilities(blocks: Iterable[np.ndarray], model: SileroModel | None = None) -> np.ndarray:
    """`speech_probabilities` of the samples these blocks hold one after another (the same whatever their
    sizes: the VAD's windows run across block edges)."""
    stream = (model or SileroModel.shared()).stream()
    found = []
    count = 0
    for block in blocks:
        count += len(block)
        found.append(stream.feed(block))
    # A last partial window counts as a window of its own, padded with silence.
    if count % WINDOW_SAMPLES:
        found.append(stream.feed(np.zeros(WINDOW_SAMPLES - count % WINDOW_SAMPLES, np.float32)))
    return np.concatenate(found) if found else np.zeros(0, np.float32)


def spans_from_probabilities(
    probabilities: np.ndarray, duration_s: float, params: SpanParams = SpanParams()
) -> list[tuple[float, float]]:
    """Padded speech spans (start, end) in seconds, merged where they overlap after padding."""
    window_s = WINDOW_SAMPLES / ENGINE_RATE_HZ
    off_threshold = max(params.threshold - HYSTERESIS, 0.01)
    raw: list[tuple[float, float]] = []
    start: float | None = None
    silence_since: float | None = None
    for index, probability in enumerate(probabilities.tolist()):
        at = index * window_s
        if start is None:
            if probability >= params.threshold:
                start, silence_since = at, None
        elif probability >= params.threshold:
            silence_since = None
        elif probability < off_threshold:
            silence_since = at if silence_since is None else silence_since
            if at + window_s - silence_since >= params.min_silence_s:
                raw.append((start, silence_since))
                start = silence_since = None
    if start is not None:
        raw.append((start, silence_since if silence_since is not None else len(probabilities) * window_s))

    spans: list[tuple[float, float]] = []
    for begin, end in raw:
        if end - begin < params.min_speech_s:
            continue
        begin, end = max(0.0, begin - params.pad_s), min(duration_s, end + params.pad_s)
        if spans and begin <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        elif end > begin:
            spans.append((begin, end))
    return spans


def pack_spans(
    spans: list[tuple[float, float]], params: SpanParams = SpanParams()
) -> list[tuple[float, float]]:
    """Contiguous pieces to decode: neighbouring spans joined while the gap and the piece stay short.

    A single span longer than `max_piece_s` stays whole: the decoder reads it window by window itself.
    """
    pieces: list[tuple[float, float]] = []
    for begin, end in spans:
        if (
            pieces
            and begin - pieces[-1][1] <= params.merge_gap_s
            and end - pieces[-1][0] <= params.max_piece_s
        ):
            pieces[-1] = (pieces[-1][0], end)
        else:
            pieces.append((begin, end))
    return pieces


@dataclass(frozen=True, slots=True)
class Piece:
    """A stretch of a recording to decode (seconds), and how much of it the VAD heard as speech."""

    start: float
    end: float
    speech_s: float


def speech_pieces(samples: np.ndarray, params: SpanParams = SpanParams()) -> list[Piece]:
    """The pieces of a 16 kHz recording worth decoding; empty when it holds no speech."""
    return pieces_from_probabilities(speech_probabilities(samples), len(samples) / ENGINE_RATE_HZ, params)


def pieces_from_probabilities(
    probabilities: np.ndarray, duration_s: float, params: SpanParams = SpanParams()
) -> list[Piece]:
    """The pieces worth decoding of a recording of `duration_s` whose window probabilities these are."""
    window_s = WINDOW_SAMPLES / ENGINE_RATE_HZ
    pieces = []
    for start, end in pack_spans(spans_from_probabilities(probabilities, duration_s, params), params):
        windows = probabilities[int(start / window_s) : int(np.ceil(end / window_s))]
        pieces.append(
            Piece(start, end, round(float(np.count_nonzero(windows >= params.threshold)) * window_s, 3))
        )
    return pieces
