"""Long FLAC files for upload tests, written a second at a time so an hour never sits in memory."""

from __future__ import annotations

import io
from collections.abc import Iterable

import av
import numpy as np

from earshot.audio.pcm import ENGINE_RATE_HZ


def flac_of(seconds: Iterable[np.ndarray]) -> bytes:
    """A 16 kHz mono FLAC of these one-second blocks of int16 samples, in order."""
    out = io.BytesIO()
    with av.open(out, "w", format="flac") as container:
        stream = container.add_stream("flac", rate=ENGINE_RATE_HZ, layout="mono")
        for index, block in enumerate(seconds):
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = ENGINE_RATE_HZ
            frame.pts = index * ENGINE_RATE_HZ
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()
