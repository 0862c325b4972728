"""faster-whisper: Whisper on CTranslate2, loaded once in every worker process; live through LocalAgreement-2.

A catalog entry names its weights as a folder, an installed package or a hub name (`whisper_models.py`);
each is resolved to a local folder at start-up. One-shot audio is cut into speech pieces by Silero VAD
(`audio/speech_spans.py`): silence and noise never reach the decoder, where Whisper would invent words, and
the pieces of a long recording decode on every worker at once. Live streams re-decode the current phrase's
buffer (`streaming/agreement.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import ctranslate2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.audio.speech_spans import Piece, speech_pieces
from earshot.engines.base import EngineError, Segment, TranscribeOptions, base_language, live_sessions_for
from earshot.engines.whisper_models import is_english_only, resolve_model_folder
from earshot.engines.workers import WorkerPool
from earshot.routing.catalog import ModelSpec
from earshot.streaming.agreement import AgreementStream
from earshot.streaming.events import Word

log = logging.getLogger(__name__)

# faster-whisper's own fallback: a decode that looks wrong is retried at the next temperature.
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
SAMPLING_SEED = 0
# How long a live phrase usually runs before a pause ends it (streaming/session.py cuts at pauses), and how
# much of a live session is speech (silence costs no decode): together they price a second of live audio.
TYPICAL_PHRASE_S = 2.0
SPEECH_SHARE = 0.75


class FasterWhisperOptions(BaseModel):
    """A catalog entry's `options` for `engine: faster_whisper`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        description="package:NAME (weights inside an installed package), a CTranslate2 model directory, "
        "or a hub name such as small.en (downloaded once at start-up)"
    )
    download_root: str | None = Field(default=None, description="Where hub models are cached")
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = Field(default="int8", description="CTranslate2 compute type: int8, float16, ...")
    cpu_threads: int | None = Field(
        default=None, ge=1, description="Threads per worker; unset: cores / workers"
    )
    language: str = Field(default="en", description="Language decoded when a request names none")
    languages: list[str] | None = Field(
        default=None, description="Language codes a request may ask for (default: any; en for .en models)"
    )
    beam_size: int = Field(default=5, ge=1)
    best_of: int = Field(default=5, ge=1)
    patience: float = Field(default=1.0, gt=0)
    temperature: tuple[float, ...] = Field(default=DEFAULT_TEMPERATURES, min_length=1)
    compression_ratio_threshold: float | None = 2.4
    log_prob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    repetition_penalty: float = Field(default=1.0, gt=0)
    no_repeat_ngram_size: int = Field(default=0, ge=0)
    initial_prompt: str | None = Field(default=None, description="Prompt used when a request gives none")
    hotwords: str | None = None
    speech_pieces: bool = Field(
        default=True, description="One-shot: decode only what Silero VAD hears as speech, pieces in parallel"
    )
    max_words_per_speech_s: float | None = Field(
        default=7.0,
        gt=0,
        description="Text with more words per second of heard speech is dropped as invented",
    )
    vad_filter: bool = Field(default=False, description="Skip non-speech with faster-whisper's Silero VAD")
    vad_parameters: dict[str, float | int] | None = None
    word_timestamps: bool = Field(default=False, description="Always align words, even when not asked")
    hallucination_silence_threshold: float | None = Field(default=None, gt=0)
    max_new_tokens: int | None = Field(default=None, ge=1, description="Tokens decoded per 30 s window")
    chunk_length: int | None = Field(default=None, ge=1, le=30)
    stream_step_s: float = Field(default=1.0, gt=0, description="Live: re-decode after this much new audio")
    stream_max_buffer_s: float = Field(default=30.0, gt=0, description="Live: longest undecided buffer")
    stream_commit: Literal["phrase", "agreement"] = Field(
        default="phrase",
        description="Live: finals from each phrase decoded whole (drafts for partials), or LocalAgreement-2",
    )


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


def build(model_id: str, spec: ModelSpec, pool: WorkerPool) -> FasterWhisperEngine:
    """The engine for one catalog entry (called by the router)."""
    options = spec.parsed_options(model_id, FasterWhisperOptions)
    folder = resolve_model_folder(model_id, options.model, options.download_root)
    return FasterWhisperEngine(options, pool, name=model_id, folder=folder)


class FasterWhisperEngine:
    """Whisper through faster-whisper, decoding in the shared worker pool."""

    def __init__(
        self,
        options: FasterWhisperOptions,
        pool: WorkerPool,
        name: str = "faster_whisper",
        folder: Path | None = None,
    ) -> None:
        self.name = name
        self.ready = False
        self.language = options.language
        folder = folder or Path(options.model).expanduser()
        # Whisper models are multilingual except the English-only `.en` ones.
        self.languages: frozenset[str] | None = (
            frozenset(code.lower() for code in options.languages)
            if options.languages is not None
            else frozenset({"en"})
            if is_english_only(folder)
            else None
        )
        self._options = options
        self._pool = pool
        self._live_capacity: int | None = None
        self.load = WhisperLoad(
            model=str(folder),
            local_files_only=True,
            download_root=options.download_root,
            device=options.device,
            compute_type=options.compute_type,
            # One thread per core across the workers: concurrent decodes never fight over cores (which slows
            # the event loop, and revocation, under load); a long upload uses every core through its pieces.
            cpu_threads=options.cpu_threads or max(1, (os.cpu_count() or 1) // pool.size),
        )

    async def start(self) -> None:
        """Load the model in every worker, and time one decode there to know the live capacity."""
        decode = WhisperDecode(self.load, tuple(sorted(self.decode_kwargs(TranscribeOptions()).items())))
        await self._pool.on_every_worker(warm_up, self.load)
        # Timed once every worker has loaded (loading competes for the cores); the quickest is the least
        # disturbed by whatever else the machine is starting.
        decode_s = min(await self._pool.on_every_worker(time_decode, decode))
        # A live session drafts its growing phrase every step (for partials) and decodes it in full once at
        # the phrase's end. Each decode pays for Whisper's whole 30 s window however short the phrase, so a
        # draft costs about what a full decode does.
        cost_per_s = SPEECH_SHARE * (decode_s / self._options.stream_step_s + decode_s / TYPICAL_PHRASE_S)
        self._live_capacity = live_sessions_for(self._pool.size, cost_per_s)
        log.info(
            "model %s: a decode takes %.2f s on a worker; %d live sessions at once",
            self.name,
            decode_s,
            self._live_capacity,
        )
        self.ready = True

    def live_capacity(self) -> int | None:
        """Live sessions the workers keep real-time, from the decode timed at start (None before)."""
        return self._live_capacity

    async def stop(self) -> None:
        """Nothing to release: the models live as long as the worker processes."""
        self.ready = False

    async def transcribe_segments(self, audio: Audio, options: TranscribeOptions) -> AsyncIterator[Segment]:
        """Decode the speech pieces on every worker at once; yield their segments in order."""
        if not len(audio.samples):
            return
        decode = WhisperDecode(self.load, tuple(sorted(self.decode_kwargs(options).items())))
        if not self._options.speech_pieces:
            pieces = [Piece(0.0, audio.duration_s, audio.duration_s)]
        else:
            pieces = await asyncio.to_thread(speech_pieces, audio.samples)
            if options.speech_gated and pieces:
                # A live phrase is decoded whole (its edges were chosen by the session's VAD, which heard what
                # led up to them); it is only skipped when it holds no speech at all.
                pieces = [Piece(0.0, audio.duration_s, sum(piece.speech_s for piece in pieces))]
        # A live session's decode goes ahead of queued upload pieces: it is what keeps the session real-time.
        run = self._pool.run_urgent if options.speech_gated or options.draft else self._pool.run
        decodes = [
            asyncio.ensure_future(
                run(
                    decode_audio,
                    decode,
                    audio.samples[round(piece.start * ENGINE_RATE_HZ) : round(piece.end * ENGINE_RATE_HZ)],
                    piece.start,
                )
            )
            for piece in pieces
        ]
        limit = self._options.max_words_per_speech_s
        try:
            for piece, decoded in zip(pieces, decodes, strict=True):
                segments = await decoded
                # Far more words than the speech heard could hold: Whisper inventing text ("See you in the
                # next video.") for a cough or a clipped word.
                if limit and sum(len(s.text.split()) for s in segments) > max(2, limit * piece.speech_s):
                    log.debug(
                        "dropped %d segments: too many words for %.2f s of speech",
                        len(segments),
                        piece.speech_s,
                    )
                    continue
                for segment in segments:
                    yield segment
        finally:
            for decoded in decodes:
                decoded.cancel()

    def open_stream(self, options: TranscribeOptions) -> AgreementStream:
        """A live stream made stable by LocalAgreement-2 over repeated whole-buffer decodes."""
        max_buffer_s = self._options.stream_max_buffer_s
        # Without interim results only finalize needs a decode (and a turn that long, to be cut).
        step_s = self._options.stream_step_s if options.interim_results else max_buffer_s
        return AgreementStream(
            self, options, step_s=step_s, max_buffer_s=max_buffer_s, commit=self._options.stream_commit
        )

    def decode_kwargs(self, options: TranscribeOptions) -> dict[str, Any]:
        """faster-whisper's `transcribe` arguments for a request: the catalog's, then the caller's."""
        configured = self._options
        temperature: tuple[float, ...] = configured.temperature
        # OpenAI's meaning: 0 (or nothing) lets the decoder raise the temperature when a decode looks wrong.
        if options.temperature:
            temperature = (options.temperature,)
        draft = options.draft
        return {
            "language": base_language(options.language or configured.language),
            "initial_prompt": options.prompt or configured.initial_prompt,
            # A draft only feeds a Partial: greedy, one temperature, no word alignment.
            "temperature": [temperature[0]] if draft else list(temperature),
            "word_timestamps": (options.word_timestamps or configured.word_timestamps) and not draft,
            "beam_size": 1 if draft else configured.beam_size,
            "best_of": 1 if draft else configured.best_of,
            "patience": configured.patience,
            "compression_ratio_threshold": configured.compression_ratio_threshold,
            "log_prob_threshold": configured.log_prob_threshold,
            "no_speech_threshold": configured.no_speech_threshold,
            "condition_on_previous_text": configured.condition_on_previous_text,
            "repetition_penalty": configured.repetition_penalty,
            "no_repeat_ngram_size": configured.no_repeat_ngram_size,
            "hotwords": configured.hotwords,
            "vad_filter": configured.vad_filter,
            "vad_parameters": dict(configured.vad_parameters) if configured.vad_parameters else None,
            "hallucination_silence_threshold": configured.hallucination_silence_threshold,
            "max_new_tokens": configured.max_new_tokens,
            "chunk_length": configured.chunk_length,
        }


# --- worker-process side: models are cached per process, keyed by how they were loaded ---

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
    # The temperature fallback samples; a fixed seed makes the same audio give the same text every time.
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
