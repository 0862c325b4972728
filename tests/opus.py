"""Opus audio in a WebM or Ogg container, as a browser's MediaRecorder sends it."""

from __future__ import annotations

import io

import av
import numpy as np

OPUS_RATE_HZ = 48_000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz


def opus_in_container(pcm48: np.ndarray, container_format: str) -> bytes:
    """48 kHz mono int16 samples encoded as Opus in `container_format` ("webm" or "ogg")."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        stream = container.add_stream("libopus", rate=OPUS_RATE_HZ, layout="mono")
        for start in range(0, len(pcm48), FRAME_SAMPLES):
            chunk = pcm48[None, start : start + FRAME_SAMPLES]
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
            frame.sample_rate = OPUS_RATE_HZ
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()
