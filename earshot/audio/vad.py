"""Silero voice activity detection on live audio, from the ONNX model inside the faster-whisper wheel."""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from earshot.audio.pcm import ENGINE_RATE_HZ

WINDOW_SAMPLES = 512
WINDOW_MS = WINDOW_SAMPLES * 1000 // ENGINE_RATE_HZ
CONTEXT_SAMPLES = 64
_ROW_SAMPLES = CONTEXT_SAMPLES + WINDOW_SAMPLES
_STATE_SHAPE = (1, 1, 128)
_MODEL_FILE = "silero_vad_v6.onnx"


class VadUnavailable(RuntimeError):
    """The Silero VAD model or onnxruntime cannot be loaded."""


@dataclass(frozen=True, slots=True)
class VadParams:
    """Server VAD settings, with the meaning OpenAI Realtime gives `server_vad`."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


def silero_model_path() -> Path:
    """The Silero VAD ONNX file shipped in the installed faster-whisper package."""
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None:
        raise VadUnavailable("server VAD needs the faster-whisper package, which is not installed")
    if spec.submodule_search_locations:
        package_dirs = [Path(location) for location in spec.submodule_search_locations]
    elif spec.origin:
        package_dirs = [Path(spec.origin).parent]
    else:
        package_dirs = []
    for package_dir in package_dirs:
        path = package_dir / "assets" / _MODEL_FILE
        if path.is_file():
            return path
    raise VadUnavailable(f"server VAD needs faster_whisper/assets/{_MODEL_FILE}, which is missing")


class SileroModel:
    """The Silero VAD network: one onnxruntime session, shared by every stream in the process."""

    _shared: ClassVar[SileroModel | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path | None = None) -> None:
        try:
            import onnxruntime
        except ImportError as e:
            raise VadUnavailable("server VAD needs the onnxruntime package, which is not installed") from e
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 4
        model_path = path if path is not None else silero_model_path()
        try:
            self._session: Any = onnxruntime.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own untyped errors for unreadable models
            raise VadUnavailable(f"server VAD could not load {model_path}: {e}") from e

    @classmethod
    def shared(cls) -> SileroModel:
        """The process-wide model, loaded on first use."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def stream(self) -> VadStream:
        """A new stream with fresh state, for one session's audio."""
        return VadStream(self)

    def run(
        self, rows: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(speech probabilities, h, c) for consecutive context-prefixed windows of one stream."""
        probabilities, h_next, c_next = self._session.run(None, {"input": rows, "h": h, "c": c})
        return probabilities.reshape(-1), h_next, c_next


class VadStream:
    """Speech probability per 32 ms window of one live audio stream."""

    __slots__ = ("_c", "_context", "_h", "_model", "_pending", "_pending_count", "_windows_seen")

    def __init__(self, model: SileroModel) -> None:
        self._model = model
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
        self._pending_count = 0
        self._windows_seen = 0

    @property
    def windows_seen(self) -> int:
        """How many window probabilities this stream has returned since it began or was reset."""
        return self._windows_seen

    def reset(self) -> None:
        """Forget all audio so far, as if the stream were new."""
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context[:] = 0.0
        self._pending_count = 0
        self._windows_seen = 0

    async def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """`feed`, for callers that may also be handed a VAD run off the event loop."""
        return self.feed(samples)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Speech probabilities (float32) of every window completed by these mono 16 kHz samples."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        pending = self._pending_count
        windows = (pending + len(samples)) // WINDOW_SAMPLES
        if windows == 0:
            self._pending[pending : pending + len(samples)] = samples
            self._pending_count += len(samples)
            return np.empty(0, dtype=np.float32)

        # Row i = the last CONTEXT_SAMPLES of window i-1, then window i; samples are copied once.
        rows = np.empty((windows, _ROW_SAMPLES), dtype=np.float32)
        first_take = WINDOW_SAMPLES - pending
        rows[0, :CONTEXT_SAMPLES] = self._context
        rows[0, CONTEXT_SAMPLES : CONTEXT_SAMPLES + pending] = self._pending[:pending]
        rows[0, CONTEXT_SAMPLES + pending :] = samples[:first_take]
        used = first_take + (windows - 1) * WINDOW_SAMPLES
        rows[1:, CONTEXT_SAMPLES:] = samples[first_take:used].reshape(windows - 1, WINDOW_SAMPLES)
        rows[1:, :CONTEXT_SAMPLES] = rows[:-1, -CONTEXT_SAMPLES:]

        probabilities, self._h, self._c = self._model.run(rows, self._h, self._c)
        self._context[:] = rows[-1, -CONTEXT_SAMPLES:]
        leftover = len(samples) - used
        self._pending[:leftover] = samples[used:]
        self._pending_count = leftover
        self._windows_seen += windows
        return probabilities
