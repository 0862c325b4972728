"""faster-whisper's worker-process side: each worker's loaded models, and decoding 16 kHz samples to segments.

Word times are aligned after the text is decoded (`aligned_words`), on the encoder output the decode made.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import ctranslate2
import numpy as np

from earshot.audio.pcm import ENGINE_RATE_HZ
from earshot.engines.base import EngineError, Segment
from earshot.engines.results import Word

log = logging.getLogger(__name__)

# The temperature fallback samples. CTranslate2 seeds each of its threads' generators once, at their first
# sample, so this fixes only where a worker's sequence starts: a decode that falls back can still give other
# words than the same audio did before, depending on what that worker sampled earlier.
SAMPLING_SEED = 0


@dataclass(frozen=True, slots=True)
class WhisperLoad:
    """How a worker loads the model; hashable, so each worker keeps one model per distinct load."""

    model: str
    local_files_only: bool
    download_root: str | None
    device: str
    compute_type: str
    cpu_threads: int


@dataclass(frozen=True, slots=True)
class WhisperDecode:
    """Everything one decode needs, sent to a worker with the audio."""

    load: WhisperLoad
    kwargs: tuple[tuple[str, Any], ...]


# Models are cached per process, keyed by how they were loaded.
_models: dict[WhisperLoad, Any] = {}


def warm_up(load: WhisperLoad) -> None:
    """Load this worker's model now rather than on the first request."""
    load_model(load)


def time_decode(decode: WhisperDecode) -> float:
    """The seconds a decode of a second of quiet noise takes here (a first decode costs about what later ones
    do)."""
    noise = np.random.default_rng(SAMPLING_SEED).normal(0, 0.01, ENGINE_RATE_HZ).astype(np.float32)
    started = time.perf_counter()
    decode_audio(decode, noise)
    return time.perf_counter() - started


def load_model(load: WhisperLoad) -> Any:
    """This worker's model for `load`, created on first use."""
    model = _models.get(load)
    if model is None:
        # Imported in the worker that loads a model: faster-whisper (CTranslate2) takes about 0.4 s to import,
        # and the server process, which never decodes, need not pay it.
        from faster_whisper import WhisperModel

        try:
            model = WhisperModel(
                load.model,
                device=load.device,
                compute_type=load.compute_type,
                cpu_threads=load.cpu_threads,
                download_root=load.download_root,
                local_files_only=load.local_files_only,
            )
        except (OSError, RuntimeError, ValueError) as e:
            # Start-up only: the operator sees this, never a caller.
            raise EngineError(f"faster-whisper could not load model {load.model!r}: {e}") from None
        _models[load] = model
    return model


def decode_audio(decode: WhisperDecode, samples: np.ndarray, offset_s: float = 0.0) -> list[Segment]:
    """Transcribe 16 kHz float32 samples: segments in order, times inside the audio, then `offset_s` later."""
    model = load_model(decode.load)
    duration_s = len(samples) / model.feature_extractor.sampling_rate
    kwargs = dict(decode.kwargs)
    # Asked of faster-whisper, word times change the text: after each window it seeks back to the last word's
    # end and decodes the rest again, which repeats short phrases ("three. three."). The text is decoded
    # without them, and the words are aligned to it afterwards (`aligned_words`). Only the hallucination
    # check, which needs words while decoding, keeps faster-whisper's own way.
    align_after = (
        bool(kwargs.get("word_timestamps")) and kwargs.get("hallucination_silence_threshold") is None
    )
    if align_after:
        kwargs["word_timestamps"] = False
    ctranslate2.set_random_seed(SAMPLING_SEED)
    encoded = _encoder_outputs(model)
    encoded.keep = align_after
    try:
        pieces, info = model.transcribe(samples, **kwargs)
        pieces = list(pieces)
        words = (
            aligned_words(model, samples, pieces, info.language, kwargs.get("chunk_length"))
            if align_after
            else [_words(piece.words) for piece in pieces]
        )
        segments = sane_segments([_segment(p, w) for p, w in zip(pieces, words, strict=True)], duration_s)
    except (RuntimeError, ValueError) as e:
        log.debug("faster-whisper failed: %s", e)
        raise EngineError("the engine could not transcribe this audio") from None
    finally:
        encoded.forget()
    return [shifted(segment, offset_s) for segment in segments] if offset_s else segments


def aligned_words(
    model: Any, samples: np.ndarray, pieces: list[Any], language: str, chunk_length: int | None
) -> list[tuple[Word, ...]]:
    """Each decoded segment's words, timed by aligning its tokens to the audio of the window it came from
    (faster-whisper's own alignment, run after decoding instead of during it)."""
    # In the worker, like `load_model`'s import.
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer

    if not pieces:
        return []
    features = model.feature_extractor(samples, chunk_length=chunk_length)
    content_frames = features.shape[-1] - 1
    tokenizer = Tokenizer(
        model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language
    )
    # What faster-whisper's transcribe attaches to a word by default (quotes, brackets, closing marks).
    defaults = inspect.signature(model.transcribe).parameters
    prepend = defaults["prepend_punctuations"].default
    append = defaults["append_punctuations"].default
    segments = [
        {"seek": piece.seek, "start": piece.start, "end": piece.end, "tokens": list(piece.tokens)}
        for piece in pieces
    ]
    windows: dict[int, list[dict[str, Any]]] = {}
    for segment in segments:
        windows.setdefault(segment["seek"], []).append(segment)
    last_speech_s = 0.0
    encoded = _encoder_outputs(model)
    for seek, window in sorted(windows.items()):
        frames = min(model.feature_extractor.nb_max_frames, content_frames - seek)
        window_features = pad_or_trim(features[:, seek : seek + frames])
        encoder_output = encoded.recall(window_features) or model.encode(window_features)
        last_speech_s = model.add_word_timestamps(
            [window], tokenizer, encoder_output, frames, prepend, append, last_speech_timestamp=last_speech_s
        )
    return [_words(segment.get("words")) for segment in segments]


def shifted(segment: Segment, offset_s: float) -> Segment:
    """The segment with its times, and its words', moved `offset_s` later."""
    words = tuple(
        Word(w.word, round(w.start + offset_s, 3), round(w.end + offset_s, 3), w.confidence)
        for w in segment.words
    )
    return replace(
        segment, start=round(segment.start + offset_s, 3), end=round(segment.end + offset_s, 3), words=words
    )


class EncoderOutputs:
    """A model's `encode`, remembering what it encoded during one decode (while `keep` is set), so words are
    aligned to a window without encoding it again (the encoder is most of a tiny model's decode time)."""

    def __init__(self, encode: Callable[[np.ndarray], Any]) -> None:
        self._encode = encode
        self._outputs: dict[bytes, Any] = {}
        self.keep = False

    def __call__(self, features: np.ndarray) -> Any:
        output = self._encode(features)
        if self.keep:
            self._outputs[_fingerprint(features)] = output
        return output

    def recall(self, features: np.ndarray) -> Any | None:
        """What these window features were encoded to during this decode, if they were."""
        return self._outputs.get(_fingerprint(features))

    def forget(self) -> None:
        self._outputs.clear()
        self.keep = False


def _fingerprint(features: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(features).tobytes(), digest_size=16).digest()


def _encoder_outputs(model: Any) -> EncoderOutputs:
    """The model's remembering encoder, put in place of its `encode` on first use."""
    if not isinstance(model.encode, EncoderOutputs):
        model.encode = EncoderOutputs(model.encode)
    return model.encode  # type: ignore[no-any-return]


def _words(words: Any) -> tuple[Word, ...]:
    """faster-whisper's words (objects or dicts) as ours, blank ones dropped."""
    result = []
    for word in words or ():
        fields = word if isinstance(word, dict) else {name: getattr(word, name) for name in _WORD_FIELDS}
        text = fields["word"].strip()
        if text:
            result.append(
                Word(
                    text, float(fields["start"]), float(fields["end"]), round(float(fields["probability"]), 4)
                )
            )
    return tuple(result)


_WORD_FIELDS = ("word", "start", "end", "probability")


def _segment(piece: Any, words: tuple[Word, ...]) -> Segment:
    return Segment(
        start=float(piece.start),
        end=float(piece.end),
        text=piece.text.strip(),
        words=words,
        avg_logprob=float(piece.avg_logprob),
        no_speech_prob=float(piece.no_speech_prob),
        compression_ratio=float(piece.compression_ratio),
        temperature=float(piece.temperature or 0.0),
    )


def sane_segments(segments: list[Segment], duration_s: float) -> list[Segment]:
    """Drop empty segments and ones past the audio's end; clamp times into order inside the audio.

    Whisper can predict timestamps past the end of the audio (the last window is padded to 30 s) or going
    backwards; callers get times that are ordered and within the audio instead.
    """
    result: list[Segment] = []
    floor_s = 0.0
    for segment in segments:
        if not segment.text or segment.start >= duration_s:
            continue
        start = round(max(segment.start, floor_s), 3)
        end = round(min(max(segment.end, start), duration_s), 3)
        words = []
        word_floor_s = start
        for word in segment.words:
            word_start = round(min(max(word.start, word_floor_s), end), 3)
            word_floor_s = round(min(max(word.end, word_start), end), 3)
            words.append(Word(word.word, word_start, word_floor_s, word.confidence))
        result.append(replace(segment, start=start, end=end, words=tuple(words)))
        floor_s = end
    return result
