"""faster-whisper: Whisper on CTranslate2, loaded once in every worker process; live through LocalAgreement-2.

A catalog entry names its weights as a folder, an installed package or a hub name (`whisper_models.py`);
each is resolved to a local folder at start-up. One-shot audio is cut into speech pieces by Silero VAD
(`audio/speech_spans.py`): silence and noise never reach the decoder, where Whisper would invent words, and
the pieces of a long recording decode on every worker at once. Live streams re-decode the current phrase's
buffer (`agreement.py`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from earshot.audio.pcm import Audio
from earshot.audio.speech_reader import find_pieces, read_pieces
from earshot.audio.speech_spans import Piece
from earshot.engines.agreement import AgreementStream
from earshot.engines.base import Segment, TranscribeOptions, base_language, live_sessions_for
from earshot.engines.spec import ModelSpec
from earshot.engines.whisper_decode import WhisperDecode, WhisperLoad, decode_audio, time_decode, warm_up
from earshot.engines.whisper_models import is_english_only, resolve_model_folder
from earshot.engines.workers import WorkerPool

log = logging.getLogger(__name__)

# faster-whisper's own fallback: a decode that looks wrong is retried at the next temperature.
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
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


def build(model_id: str, spec: ModelSpec, pool: WorkerPool) -> FasterWhisperEngine:
    """The engine for one catalog entry (called by the router)."""
    options = spec.parsed_options(model_id, FasterWhisperOptions)
    folder = resolve_model_folder(model_id, options.model, options.download_root)
    return FasterWhisperEngine(options, pool, name=model_id, folder=folder)


class FasterWhisperEngine:
    """Whisper through faster-whisper, decoding in the shared worker pool."""

    # One-shot audio kept encoded (an upload) is read block by block, never held whole.
    reads_encoded_audio = True

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
        if audio.duration_s <= 0:
            return
        decode = WhisperDecode(self.load, tuple(sorted(self.decode_kwargs(options).items())))
        if not self._options.speech_pieces:
            pieces = [Piece(0.0, audio.duration_s, audio.duration_s)]
        else:
            pieces = await find_pieces(audio)
            if options.speech_gated and pieces:
                # A live phrase is decoded whole (its edges were chosen by the session's VAD, which heard what
                # led up to them); it is only skipped when it holds no speech at all.
                pieces = [Piece(0.0, audio.duration_s, sum(piece.speech_s for piece in pieces))]
        # A live session's decode goes ahead of queued upload pieces: it is what keeps the session real-time.
        run = self._pool.run_urgent if options.speech_gated or options.draft else self._pool.run
        # Pieces are read and queued a few ahead of the one being awaited, so every worker stays busy but a
        # long recording's audio is never all held at once.
        ahead = 2 * self._pool.size
        decodes: deque[tuple[Piece, asyncio.Future[list[Segment]]]] = deque()
        try:
            async for piece, samples in read_pieces(audio, pieces):
                decodes.append(
                    (piece, asyncio.ensure_future(run(decode_audio, decode, samples, piece.start)))
                )
                while len(decodes) > ahead or (decodes and decodes[0][1].done()):
                    done, decoded = decodes.popleft()
                    for segment in self._believable(done, await decoded):
                        yield segment
            while decodes:
                done, decoded = decodes.popleft()
                for segment in self._believable(done, await decoded):
                    yield segment
        finally:
            for _, decoded in decodes:
                decoded.cancel()

    def _believable(self, piece: Piece, segments: list[Segment]) -> list[Segment]:
        """A piece's segments, or none when they hold far more words than the speech heard could: Whisper
        inventing text ("See you in the next video.") for a cough or a clipped word."""
        limit = self._options.max_words_per_speech_s
        if limit and sum(len(s.text.split()) for s in segments) > max(2, limit * piece.speech_s):
            log.debug(
                "dropped %d segments: too many words for %.2f s of speech", len(segments), piece.speech_s
            )
            return []
        return segments

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
