"""The speech pieces of a recording (`speech_spans`), and their samples read one piece after another.

A recording kept encoded (`EncodedAudio`) is read twice, block by block: once for the VAD's probabilities,
then again to cut out each piece as the decode reaches it. What is held at once is the piece being cut and the
block being read, however long the recording.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np

from earshot.audio.encoded import EncodedAudio
from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.audio.speech_spans import Piece, block_probabilities, pieces_from_probabilities, speech_pieces


async def find_pieces(audio: Audio) -> list[Piece]:
    """The pieces of the recording worth decoding (off the event loop)."""
    if isinstance(audio, EncodedAudio):
        probabilities = await asyncio.to_thread(lambda: block_probabilities(audio.blocks()))
        return pieces_from_probabilities(probabilities, audio.duration_s)
    return await asyncio.to_thread(speech_pieces, audio.samples)


async def read_pieces(audio: Audio, pieces: list[Piece]) -> AsyncIterator[tuple[Piece, np.ndarray]]:
    """Each piece (in order, not overlapping) with its samples."""
    if not isinstance(audio, EncodedAudio):
        samples = audio.samples
        for piece in pieces:
            yield piece, samples[_sample(piece.start) : _sample(piece.end)]
        return
    blocks = audio.blocks()
    try:
        held: list[np.ndarray] = []
        held_from = held_until = 0  # the samples in `held`, on the recording's clock
        for piece in pieces:
            start, end = _sample(piece.start), _sample(piece.end)
            while held_until < end:
                block = await asyncio.to_thread(next, blocks, None)
                if block is None:
                    break
                held.append(block)
                held_until += len(block)
                if held_from < start:
                    # What comes before the piece (silence between pieces) is dropped as it is read.
                    joined = np.concatenate(held)
                    dropped = min(start - held_from, len(joined))
                    held, held_from = [joined[dropped:]], held_from + dropped
            joined = np.concatenate(held) if held else np.zeros(0, np.float32)
            cut = joined[max(0, start - held_from) : max(0, end - held_from)].copy()
            # Pieces never overlap: nothing before this one's end is needed again.
            rest = max(0, end - held_from)
            held, held_from = [joined[rest:]], held_from + min(rest, len(joined))
            yield piece, cut
    finally:
        # Cancelled while a thread is inside `next`, the generator still runs there: it is left to finish and
        # be collected rather than closed under it.
        with contextlib.suppress(ValueError):
            blocks.close()


def _sample(at_s: float) -> int:
    return round(at_s * ENGINE_RATE_HZ)
