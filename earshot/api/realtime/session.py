"""The Realtime transcription session object on the wire, in the beta and the GA dialect.

Beta clients send `transcription_session.update` with flat fields (`input_audio_format: "pcm16"`); GA
clients send `session.update` with `type: "transcription"` and nested `audio.input` fields. Both become one
`RealtimeSettings`, which is rendered back in whichever dialect the client speaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from earshot.audio.raw import RawEncoding, RawFormat
from earshot.audio.vad import VadParams

Dialect = Literal["beta", "ga"]
AudioEncoding = Literal["pcm16", "g711_ulaw", "g711_alaw"]
_RAW_ENCODINGS: dict[str, RawEncoding] = {"pcm16": "pcm16", "g711_ulaw": "mulaw", "g711_alaw": "alaw"}

OPENAI_PCM_RATE_HZ = 24_000
G711_RATE_HZ = 8_000
_GA_FORMAT_TYPES: dict[AudioEncoding, str] = {
    "pcm16": "audio/pcm",
    "g711_ulaw": "audio/pcmu",
    "g711_alaw": "audio/pcma",
}
# semantic_vad has no semantic model here; its eagerness picks how long a pause ends a turn.
_EAGERNESS_SILENCE_MS = {"low": 1200, "medium": 700, "auto": 700, "high": 350}


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TurnDetectionIn(_Wire):
    """server_vad (or semantic_vad, served by the same VAD) parameters."""

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    prefix_padding_ms: int | None = Field(default=None, ge=0, le=10_000)
    silence_duration_ms: int | None = Field(default=None, ge=0, le=10_000)
    eagerness: Literal["low", "medium", "high", "auto"] | None = None


class TranscriptionIn(_Wire):
    """Which model transcribes, in which language, with which prompt."""

    model: str | None = None
    language: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})?$")
    prompt: str | None = None


class BetaSessionIn(_Wire):
    """`transcription_session.update`'s `session`."""

    input_audio_format: AudioEncoding | None = None
    input_audio_transcription: TranscriptionIn | None = None
    turn_detection: TurnDetectionIn | None = None
    input_audio_noise_reduction: dict[str, Any] | None = None
    include: list[str] | None = None


class GAFormatIn(_Wire):
    """GA `audio.input.format`: PCM (24 kHz by default; earshot takes any rate), μ-law or A-law."""

    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
    rate: int | None = Field(default=None, ge=8_000, le=96_000)


class GAInputIn(_Wire):
    format: GAFormatIn | None = None
    transcription: TranscriptionIn | None = None
    turn_detection: TurnDetectionIn | None = None
    noise_reduction: dict[str, Any] | None = None


class GAAudioIn(_Wire):
    input: GAInputIn | None = None


class GASessionIn(_Wire):
    """`session.update`'s `session` for a transcription session."""

    type: Literal["transcription"] = "transcription"
    audio: GAAudioIn | None = None
    include: list[str] | None = None


@dataclass(frozen=True, slots=True)
class RealtimeSettings:
    """A transcription session's effective configuration."""

    id: str
    model: str
    encoding: AudioEncoding = "pcm16"
    pcm_rate_hz: int = OPENAI_PCM_RATE_HZ
    language: str | None = None
    prompt: str | None = None
    vad: VadParams | None = field(default_factory=VadParams)
    vad_type: Literal["server_vad", "semantic_vad"] = "server_vad"
    noise_reduction: dict[str, Any] | None = None
    include: tuple[str, ...] = ()

    @property
    def input_rate_hz(self) -> int:
        """Sample rate of the PCM16 the client's audio decodes to."""
        return self.pcm_rate_hz if self.encoding == "pcm16" else G711_RATE_HZ

    @property
    def raw_format(self) -> RawFormat:
        """How the appended audio's bytes are laid out."""
        return RawFormat(rate_hz=self.input_rate_hz, encoding=_RAW_ENCODINGS[self.encoding])

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        """The `turn_detection` object (the same in both dialects); None for manual commits."""
        if self.vad is None:
            return None
        return {
            "type": self.vad_type,
            "threshold": self.vad.threshold,
            "prefix_padding_ms": self.vad.prefix_padding_ms,
            "silence_duration_ms": self.vad.silence_duration_ms,
        }

    def with_beta(self, update: BetaSessionIn) -> RealtimeSettings:
        """These settings changed by a beta update (only the fields it names)."""
        settings = self
        if update.input_audio_format is not None:
            settings = replace(settings, encoding=update.input_audio_format, pcm_rate_hz=OPENAI_PCM_RATE_HZ)
        settings = settings._with_common(update, update.input_audio_transcription)
        if "input_audio_noise_reduction" in update.model_fields_set:
            settings = replace(settings, noise_reduction=update.input_audio_noise_reduction)
        return settings

    def with_ga(self, update: GASessionIn) -> RealtimeSettings:
        """These settings changed by a GA update (only the fields it names)."""
        settings = self
        audio_input = update.audio.input if update.audio is not None else None
        if audio_input is None:
            return replace(settings, include=tuple(update.include or settings.include))
        if audio_input.format is not None:
            encoding = next(
                key for key, value in _GA_FORMAT_TYPES.items() if value == audio_input.format.type
            )
            settings = replace(
                settings, encoding=encoding, pcm_rate_hz=audio_input.format.rate or OPENAI_PCM_RATE_HZ
            )
        settings = settings._with_common(audio_input, audio_input.transcription)
        if "noise_reduction" in audio_input.model_fields_set:
            settings = replace(settings, noise_reduction=audio_input.noise_reduction)
        if update.include is not None:
            settings = replace(settings, include=tuple(update.include))
        return settings

    def _with_common(
        self, update: BetaSessionIn | GAInputIn, transcription: TranscriptionIn | None
    ) -> RealtimeSettings:
        settings = self
        if transcription is not None:
            fields = transcription.model_fields_set
            settings = replace(
                settings,
                model=transcription.model if "model" in fields and transcription.model else settings.model,
                language=transcription.language if "language" in fields else settings.language,
                prompt=transcription.prompt if "prompt" in fields else settings.prompt,
            )
        if "turn_detection" in update.model_fields_set:
            detection = update.turn_detection
            if detection is None:
                settings = replace(settings, vad=None)
            else:
                settings = replace(settings, vad=_vad_params(detection), vad_type=detection.type)
        if isinstance(update, BetaSessionIn) and update.include is not None:
            settings = replace(settings, include=tuple(update.include))
        return settings

    def to_wire(self, dialect: Dialect) -> dict[str, Any]:
        """The session object as the client's dialect shows it."""
        transcription = {"model": self.model, "language": self.language, "prompt": self.prompt or ""}
        turn_detection = self.turn_detection
        if dialect == "beta":
            return {
                "id": self.id,
                "object": "realtime.transcription_session",
                "expires_at": 0,
                "input_audio_format": self.encoding,
                "input_audio_transcription": transcription,
                "turn_detection": turn_detection,
                "input_audio_noise_reduction": self.noise_reduction,
                "include": list(self.include) or None,
                "modalities": ["text"],
            }
        audio_format: dict[str, Any] = {"type": _GA_FORMAT_TYPES[self.encoding]}
        if self.encoding == "pcm16":
            audio_format["rate"] = self.pcm_rate_hz
        return {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": self.id,
            "expires_at": 0,
            "audio": {
                "input": {
                    "format": audio_format,
                    "transcription": transcription,
                    "turn_detection": turn_detection,
                    "noise_reduction": self.noise_reduction,
                }
            },
            "include": list(self.include),
        }


def _vad_params(detection: TurnDetectionIn) -> VadParams:
    defaults = VadParams()
    silence_ms = detection.silence_duration_ms
    if silence_ms is None and detection.type == "semantic_vad":
        silence_ms = _EAGERNESS_SILENCE_MS[detection.eagerness or "auto"]
    return VadParams(
        threshold=detection.threshold if detection.threshold is not None else defaults.threshold,
        prefix_padding_ms=(
            detection.prefix_padding_ms
            if detection.prefix_padding_ms is not None
            else defaults.prefix_padding_ms
        ),
        silence_duration_ms=silence_ms if silence_ms is not None else defaults.silence_duration_ms,
    )
