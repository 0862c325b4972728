"""espeak-ng, the embedded synthesizer: libespeak-ng and its data from the `espeakng-loader` wheel (ctypes).

libespeak-ng keeps its state (voice, rate, the synthesis callback) in the process and is not thread-safe, so
every call into it runs on one dedicated thread, one piece of text at a time. A request's text is spoken a
sentence at a time, and each sentence is resampled and encoded on a small pool of encoding threads while the
espeak thread speaks other requests' sentences, so the event loop only moves bytes, concurrent requests take
turns between sentences, and the first sentence's audio leaves before the last is made.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import numpy as np

from earshot.audio.encode import SpeechEncoder
from earshot.engines.base import EngineError
from earshot.engines.spec import CatalogError
from earshot.voice.pieces import text_pieces
from earshot.voice.spec import SynthesisSpec
from earshot.voice.tts import SpeechRequest
from earshot.voice.voices import UnknownVoice, espeak_voice

log = logging.getLogger(__name__)
T = TypeVar("T")

# From espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_RATE = 1
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_BUFFER_MS = 200
ENCODING_THREADS = 4
# espeak-ng's words per minute at speed 1.0, and the rates it can speak at; OpenAI's speeds outside what
# they allow are spoken at the nearest (0.25 to 0.45 all sound like 0.46).
NORMAL_WPM = 175
MIN_WPM, MAX_WPM = 80, 700

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def words_per_minute(speed: float) -> int:
    """espeak-ng's rate for one of OpenAI's speeds (1.0 is its normal 175 words per minute)."""
    return max(MIN_WPM, min(MAX_WPM, round(NORMAL_WPM * speed)))


class EspeakLibrary:
    """libespeak-ng, initialised for synchronous synthesis; use it from one thread only."""

    def __init__(self) -> None:
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data_path = espeakng_loader.get_data_path().encode()
        rate_hz = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, _INITIALIZE_DONT_EXIT
        )
        if rate_hz <= 0:
            raise RuntimeError(f"libespeak-ng failed to initialise (error {rate_hz})")
        self.rate_hz: int = rate_hz
        self._blocks: list[np.ndarray] = []
        # Kept referenced: libespeak-ng calls it for as long as the process lives.
        self._callback = _SynthCallback(self._collect)
        self._lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    def _collect(self, samples: ctypes._Pointer[ctypes.c_short], count: int, events: int | None) -> int:
        if samples and count > 0:
            self._blocks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0

    def speak(self, text: str, voice: str, words_per_minute: int) -> np.ndarray:
        """The int16 samples (at `rate_hz`) of `text` in `voice`; UnknownVoice if espeak-ng lacks it."""
        if voice != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                self._voice = None
                raise UnknownVoice(voice)
            self._voice = voice
        self._lib.espeak_SetParameter(_RATE, words_per_minute, 0)
        encoded = text.encode()
        self._blocks = []
        error = self._lib.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
        )
        if error != 0:
            raise EngineError(f"espeak-ng failed to synthesize (error {error})")
        blocks, self._blocks = self._blocks, []
        return np.concatenate(blocks) if blocks else np.zeros(0, np.int16)


class EspeakThread:
    """The one thread every call into libespeak-ng runs on, shared by every espeak model of the process."""

    _shared: EspeakThread | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="espeak")
        # Resampling and encoding what espeak-ng spoke, beside it (PyAV and soxr release the GIL).
        self.encoders = ThreadPoolExecutor(ENCODING_THREADS, thread_name_prefix="speech-encode")
        self.library: EspeakLibrary | None = None

    @classmethod
    def shared(cls) -> EspeakThread:
        """The process's espeak thread, made on first use."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    async def run(self, work: Callable[[EspeakLibrary], T]) -> T:
        """Run `work(library)` on the espeak thread, loading the library first if need be."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._call, work)

    def _call(self, work: Callable[[EspeakLibrary], T]) -> T:
        if self.library is None:
            self.library = EspeakLibrary()
        return work(self.library)


class _Encoding:
    """One request's encoder, fed on the encoding threads one block at a time.

    Its calls never overlap: each waits for the one before. Dropping it while a call runs closes it once that
    call is done, on the thread that ran it.
    """

    def __init__(self, encoder: SpeechEncoder, executor: ThreadPoolExecutor) -> None:
        self._encoder = encoder
        self._executor = executor
        self._running: Future[bytes] | None = None

    async def feed(self, samples: np.ndarray) -> bytes:
        return await self._run(partial(self._encoder.feed, samples))

    async def finish(self) -> bytes:
        return await self._run(self._encoder.finish)

    async def _run(self, work: Callable[[], bytes]) -> bytes:
        self._running = self._executor.submit(work)
        return await asyncio.wrap_future(self._running)

    def drop(self) -> None:
        if self._running is not None and not self._running.done():
            self._running.add_done_callback(lambda _: self._encoder.close())
        else:
            self._encoder.close()


class EspeakSynthesizer:
    """Speech from espeak-ng: OpenAI's voices mapped onto its English voices, any espeak-ng voice by name."""

    def __init__(self, name: str, thread: EspeakThread | None = None) -> None:
        self.name = name
        self._thread = thread or EspeakThread.shared()
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        """Load libespeak-ng on its thread."""
        await self._thread.run(lambda library: library.rate_hz)
        self._ready = True

    async def stop(self) -> None:
        """Nothing to release: the library stays loaded for the process."""
        self._ready = False

    async def synthesize(self, request: SpeechRequest) -> AsyncIterator[bytes]:
        """The encoded speech of `request.text`, a sentence at a time; `instructions` are not used.

        Each sentence is spoken on the espeak thread, then resampled and encoded on an encoding thread, so
        the espeak thread moves on to the next request's sentence meanwhile.
        """
        voice, rate_wpm = espeak_voice(request.voice), words_per_minute(request.speed)
        rate_hz = await self._thread.run(lambda library: library.rate_hz)
        encoding = _Encoding(SpeechEncoder(request.response_format, rate_hz), self._thread.encoders)
        finished = False
        try:
            for text in text_pieces(request.text):
                samples = await self._thread.run(partial(_speak, text, voice, rate_wpm))
                data = await encoding.feed(samples)
                if data:
                    yield data
            tail = await encoding.finish()
            finished = True
            if tail:
                yield tail
        finally:
            if not finished:
                encoding.drop()


def _speak(text: str, voice: str, rate_wpm: int, library: EspeakLibrary) -> np.ndarray:
    return library.speak(text, voice, rate_wpm)


def build(model_id: str, spec: SynthesisSpec) -> EspeakSynthesizer:
    """The synthesizer for an `espeak` catalog entry (it takes no options)."""
    if spec.options:
        raise CatalogError(
            f"speech model {model_id!r} (espeak) takes no options; got {', '.join(spec.options)}"
        )
    return EspeakSynthesizer(model_id)
