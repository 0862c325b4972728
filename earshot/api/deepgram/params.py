"""Deepgram's `/v1/listen` query parameters, validated, and Deepgram's error shape.

Live and prerecorded requests share one parameter model. Every parameter Deepgram documents is one of three
kinds: read and honoured (the fields of ListenParams), refused when asked for (REFUSED: honouring it is out of
earshot's reach, and ignoring it would hand back an answer the caller would take for what it asked), or
accepted and ignored (ACCEPTED_AND_IGNORED: formatting and bookkeeping whose absence changes no word's
meaning). A bad or refused one is a 400 with Deepgram's error body `{"err_code", "err_msg", "request_id"}`.
Names Deepgram does not document are ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from earshot.accounts.errors import (
    AccessDenied,
)
from earshot.api.failures import Failure, of_denial, of_engine
from earshot.audio.raw import RawEncoding as RawAudioEncoding
from earshot.audio.raw import RawFormat
from earshot.audio.vad import VadParams
from earshot.engines.base import EngineError, supports_language
from earshot.routing.capacity import LIVE_RETRY_AFTER_S
from earshot.routing.catalog import Catalog, ModelNotFound
from earshot.routing.gate import ServerBusy
from earshot.routing.router import Route

RawEncoding = Literal["linear16", "mulaw", "alaw"]
# Encodings Deepgram names that earshot does not take as raw frames (send them in a container instead).
_OTHER_ENCODINGS = frozenset({"flac", "opus", "ogg-opus", "amr-nb", "amr-wb", "speex", "g729", "mp3"})
G711_RATE_HZ = 8_000
# Deepgram's default endpointing is 10 ms; the VAD decides per 32 ms window and a pause that short splits
# words, so an endpointing pause is never shorter than this.
MIN_ENDPOINTING_MS = 300
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")

# Deepgram parameters refused when set to anything but false, and why.
REFUSED: dict[str, str] = {
    "callback": "results are only given in the response (or on the stream), never posted to a callback",
    "multichannel": "the channels are mixed and transcribed as one",
    "redact": "nothing is redacted, so the transcript would hold what was asked to be removed",
    "replace": "terms are not replaced",
    "search": "there is no audio search",
    "detect_language": "the language is not detected: pass language, or leave it out for the model's own",
    "detect_entities": "entities are not detected",
    "summarize": "there is no summarization",
    "topics": "topics are not detected",
    "custom_topic": "topics are not detected",
    "intents": "intents are not recognised",
    "custom_intent": "intents are not recognised",
    "sentiment": "sentiment is not analysed",
}
# Deepgram parameters taken without complaint that change nothing here. Listed in docs/api.md.
ACCEPTED_AND_IGNORED = frozenset(
    {
        "callback_method",  # only means something with callback (refused)
        "custom_intent_mode",
        "custom_topic_mode",
        "diarize_model",
        "diarize_version",
        "dictation",
        "extra",
        "filler_words",
        "language_hint",
        "measurements",
        "mip_opt_out",
        "numerals",
        "profanity_filter",
        "tag",
        "utt_split",
        "version",
    }
)


class DeepgramError(Exception):
    """A failure to report in Deepgram's error shape with an HTTP status."""

    def __init__(
        self, status: int, err_code: str, err_msg: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(err_msg)
        self.status = status
        self.err_code = err_code
        self.err_msg = err_msg
        self.headers = headers or {}

    def body(self, request_id: str) -> str:
        """The JSON error body."""
        return json.dumps({"err_code": self.err_code, "err_msg": self.err_msg, "request_id": request_id})

    @classmethod
    def bad_request(cls, message: str) -> DeepgramError:
        """A 400 for a bad parameter or body."""
        return cls(400, "Bad Request", message)

    @classmethod
    def of(cls, failure: Failure) -> DeepgramError:
        """A refusal or failure in Deepgram's shape."""
        headers = {"Retry-After": str(failure.retry_after_s)} if failure.retry_after_s is not None else {}
        if failure.code == "invalid_api_key":
            return cls(401, "INVALID_AUTH", f"Invalid credentials: {failure.message}")
        err_code, status = _DEEPGRAM_CODES.get(failure.code, (None, failure.status))
        if err_code is None:
            other = "UPSTREAM_ERROR" if failure.code == "upstream_error" else "INTERNAL_SERVER_ERROR"
            err_code = {400: "Bad Request", 429: "TOO_MANY_REQUESTS"}.get(status, other)
        return cls(status, err_code, failure.message, headers)

    @classmethod
    def refused(cls, code: str, message: str) -> DeepgramError:
        """The error for a live connection refused by admission or model choice (earshot's refusal codes)."""
        waits = code in ("server_busy", "server_shutting_down")
        return cls.of(Failure(400, code, message, retry_after_s=LIVE_RETRY_AFTER_S if waits else None))

    @classmethod
    def from_engine(cls, failure: EngineError | ServerBusy) -> DeepgramError:
        """The error for a failed engine or provider, with the statuses the OpenAI routes use."""
        return cls.of(of_engine(failure))

    @classmethod
    def denied(cls, denial: AccessDenied) -> DeepgramError:
        """The error for an AccessDenied raised by the accounts layer."""
        return cls.of(of_denial(denial))


# Deepgram's err_code, and the status it answers with, for earshot's refusal codes.
_DEEPGRAM_CODES: dict[str, tuple[str, int]] = {
    "model_not_allowed": ("INSUFFICIENT_PERMISSIONS", 403),
    "rate_limit_exceeded": ("TOO_MANY_REQUESTS", 429),
    "concurrency_limit_exceeded": ("TOO_MANY_REQUESTS", 429),
    "insufficient_quota": ("INSUFFICIENT_CREDITS", 402),
    # Deepgram answers a full server as it answers too many concurrent requests.
    "server_busy": ("TOO_MANY_REQUESTS", 429),
    "server_shutting_down": ("SERVICE_UNAVAILABLE", 503),
    "forbidden": ("FORBIDDEN", 403),
}


def _flag(value: Any) -> Any:
    """Deepgram booleans are the strings true and false."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


class ListenParams(BaseModel):
    """The query parameters of `/v1/listen` that earshot reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str | None = None
    language: str | None = Field(default=None, pattern=_LANGUAGE.pattern)
    encoding: RawEncoding | None = None
    sample_rate: int | None = Field(default=None, ge=8_000, le=96_000)
    channels: int = Field(default=1, ge=1, le=8)
    interim_results: bool = False
    punctuate: bool = False
    smart_format: bool = False
    # None: endpointing off; an int: the pause, in ms, that ends an utterance (speech_final).
    endpointing: int | None = Field(default=10, ge=0, le=60_000)
    utterance_end_ms: int | None = Field(default=None, ge=1_000, le=60_000)
    vad_events: bool = False
    diarize: bool = False
    utterances: bool = False
    paragraphs: bool = False
    keywords: tuple[str, ...] = ()
    keyterm: tuple[str, ...] = ()
    tag: tuple[str, ...] = ()

    @field_validator(
        "interim_results",
        "punctuate",
        "smart_format",
        "vad_events",
        "diarize",
        "utterances",
        "paragraphs",
        mode="before",
    )
    @classmethod
    def _booleans(cls, value: Any) -> Any:
        value = _flag(value)
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value

    @field_validator("endpointing", mode="before")
    @classmethod
    def _endpointing(cls, value: Any) -> Any:
        value = _flag(value)
        if value is False:
            return None
        if value is True:
            return 10
        return value

    @field_validator("encoding", mode="before")
    @classmethod
    def _known_encoding(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in _OTHER_ENCODINGS:
            raise ValueError(
                f"{value} is not accepted as raw frames here: send linear16, mulaw or alaw, or send the "
                "audio in its container (webm, ogg, wav ...) and leave encoding out"
            )
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _nothing_refused(cls, raw: Any) -> Any:
        if isinstance(raw, Mapping):
            for name, why in REFUSED.items():
                value = raw.get(name)
                values = value if isinstance(value, tuple) else (value,)
                if any(item not in (None, "") and _flag(item) is not False for item in values):
                    raise ValueError(f"{name} is not supported by this server: {why}")
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> ListenParams:
        if self.encoding == "linear16" and self.sample_rate is None:
            raise ValueError("sample_rate is required with encoding=linear16")
        if self.utterance_end_ms is not None and not self.interim_results:
            raise ValueError("utterance_end_ms requires interim_results=true")
        return self

    @classmethod
    def from_query(cls, query: Mapping[str, str], lists: Mapping[str, Sequence[str]]) -> ListenParams:
        """Validate a query string (`lists` holds every value of repeated parameters)."""
        raw: dict[str, Any] = {key: value for key, value in query.items() if value != ""}
        for name in ("keywords", "keyterm", "tag", "redact", "replace", "search"):
            raw[name] = tuple(lists.get(name, ()))
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            text = f"Invalid query parameter {where}: {message}" if where else message
            raise DeepgramError.bad_request(text) from e

    @property
    def raw_format(self) -> RawFormat | None:
        """How raw frames are laid out; None when the audio comes in a container."""
        if self.encoding is None:
            return None
        encoding: RawAudioEncoding = "pcm16" if self.encoding == "linear16" else self.encoding
        return RawFormat(rate_hz=self.input_rate_hz, encoding=encoding, channels=self.channels)

    @property
    def input_rate_hz(self) -> int:
        """The rate of the PCM16 the caller's frames decode to (containers are resampled to 16 kHz)."""
        if self.encoding is None:
            return 16_000
        return self.sample_rate or G711_RATE_HZ

    @property
    def vad(self) -> VadParams:
        """Turn detection for these parameters."""
        defaults = VadParams()
        if "endpointing" not in self.model_fields_set:
            # Deepgram's 10 ms default can't be honoured (above): the VAD's own default pause applies.
            return defaults
        if self.endpointing is not None:
            return VadParams(silence_duration_ms=max(self.endpointing, MIN_ENDPOINTING_MS))
        if self.utterance_end_ms is not None:
            return VadParams(silence_duration_ms=self.utterance_end_ms)
        return defaults

    @property
    def prompt(self) -> str | None:
        """Keywords and key terms (weights dropped) as a prompt, for engines that take one."""
        terms = [term.rsplit(":", 1)[0] if ":" in term else term for term in (*self.keyterm, *self.keywords)]
        terms = [term.strip() for term in terms if term.strip()]
        return ", ".join(terms) if terms else None

    @property
    def punctuated(self) -> bool:
        """Whether words get a `punctuated_word`."""
        return self.punctuate or self.smart_format


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """Which catalog model a Deepgram `model` parameter means."""

    requested: str | None
    model_id: str | None


def choose_model(catalog: Catalog, requested: str | None) -> ModelChoice:
    """A catalog id or alias is used as given; any other name (nova-3, base ...) means the default model."""
    if not requested:
        return ModelChoice(None, None)
    try:
        catalog.resolve(requested)
    except ModelNotFound:
        return ModelChoice(requested, None)
    return ModelChoice(requested, requested)


def check_language(language: str | None, route: Route) -> None:
    """A 400 unless the routed model's engine recognises the requested language."""
    if language and not supports_language(route.engine, language):
        raise DeepgramError.bad_request(
            f"The model {route.model_id} does not support the language {language!r}."
        )
