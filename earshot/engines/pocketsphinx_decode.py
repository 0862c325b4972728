"""pocketsphinx decoding in the worker processes: one decoder per config and process, a region at a time.

Both the one-shot engine (`pocketsphinx.py`) and the live streams (`pocketsphinx_live.py`) decode with these.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from earshot.audio.pcm import ENGINE_RATE_HZ
from earshot.engines.base import EngineError, Segment
from earshot.engines.results import Word

# The longest audio decoded as one utterance: longer speech regions, and live utterances, are cut.
MAX_REGION_S = 30.0


@dataclass(frozen=True, slots=True)
class PocketsphinxConfig:
    """Decoder settings; empty means the model shipped in the wheel. Keys are pocketsphinx config names."""

    settings: tuple[tuple[str, str | int | float | bool], ...] = ()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> PocketsphinxConfig:
        """Build from a catalog entry's `options` mapping (e.g. hmm, lm, dict, beam)."""
        return cls(tuple(sorted(options.items())))


# --- worker-process side: decoders are cached per process, keyed by their config ---

_decoders: dict[PocketsphinxConfig, Any] = {}


def warm_up(config: PocketsphinxConfig) -> float:
    """Load this worker's decoder now rather than on the first request; its real-time factor on a clip."""
    load_decoder(config)
    rng = np.random.default_rng(0)
    clip_s = 2.0
    noise = (rng.normal(0, 300, round(clip_s * ENGINE_RATE_HZ))).astype(np.int16).tobytes()
    started = time.perf_counter()
    decode_region(config, noise, 0.0)
    return (time.perf_counter() - started) / clip_s


def load_decoder(config: PocketsphinxConfig) -> Any:
    """This worker's decoder for `config`, created on first use."""
    decoder = _decoders.get(config)
    if decoder is None:
        decoder = new_decoder(config)
        _decoders[config] = decoder
    return decoder


def new_decoder(config: PocketsphinxConfig) -> Any:
    # Imported where used: the router imports the engines for every catalog, and only the processes that
    # decode need pocketsphinx's C extension.
    from pocketsphinx import Decoder

    try:
        return Decoder(loglevel="FATAL", **dict(config.settings))
    except (RuntimeError, ValueError, KeyError) as e:
        raise EngineError(f"pocketsphinx could not load its model: {e}") from None


def decode_region(config: PocketsphinxConfig, pcm16: bytes, offset_s: float) -> Segment:
    """Decode one speech region as a whole utterance, independent of what this decoder saw before."""
    decoder = load_decoder(config)
    # The front end adapts its normalisation across utterances; resetting it makes a region's text the same
    # whichever worker decodes it and whatever it decoded before.
    decoder.reinit_feat()
    decoder.start_utt()
    if pcm16:
        decoder.process_raw(pcm16, False, True)
    decoder.end_utt()
    words = decoded_words(decoder, offset_s)
    text = " ".join(word.word for word in words)
    end_s = offset_s + len(pcm16) / 2 / ENGINE_RATE_HZ
    avg_logprob = float(np.mean([math.log(max(w.confidence, 1e-6)) for w in words])) if words else 0.0
    return Segment(start=offset_s, end=end_s, text=text, words=tuple(words), avg_logprob=avg_logprob)


def decoded_words(decoder: Any, offset_s: float) -> list[Word]:
    frame_rate = int(decoder.config["frate"])
    words = []
    for seg in decoder.seg() or ():
        token: str = seg.word
        if token.startswith(("<", "[", "+")):
            continue
        words.append(
            Word(
                word=token.split("(", 1)[0],
                start=round(offset_s + seg.start_frame / frame_rate, 3),
                end=round(offset_s + (seg.end_frame + 1) / frame_rate, 3),
                confidence=round(min(1.0, max(0.0, float(seg.prob))), 4),
            )
        )
    return words
