"""Deepgram's wire: the catalog settings, query parameters, and its words and utterances as earshot's."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from earshot.engines.base import Segment, TranscribeOptions
from earshot.engines.provider_io import websocket_url
from earshot.engines.results import Word
from earshot.engines.spec import ModelSpec

PROVIDER = "deepgram"
DEFAULT_BASE_URL = "https://api.deepgram.com"
DEFAULT_MODEL = "nova-3"
# Options that configure the engine itself rather than being passed to Deepgram as query parameters.
ENGINE_SETTINGS = frozenset({"language", "keepalive_s", "finalize_timeout_s"})


@dataclass(frozen=True, slots=True)
class DeepgramConfig:
    """Where Deepgram is, how to authenticate, and what to ask it for."""

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    language: str = "en"
    query: tuple[tuple[str, str], ...] = ()
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    # Live: a KeepAlive after this long without audio (Deepgram closes a stream silent for 10 s).
    keepalive_s: float = 4.0
    # Live: Flushed is given anyway if Deepgram sends no `from_finalize` result this long after Finalize.
    finalize_timeout_s: float = 5.0

    @classmethod
    def from_spec(cls, model_id: str, spec: ModelSpec) -> DeepgramConfig:
        """Build from a catalog entry; the key is read from the environment variable it names."""
        options = spec.options
        query = tuple(
            (name, _query_value(item))
            for name, value in options.items()
            if name not in ENGINE_SETTINGS
            for item in (value if isinstance(value, list | tuple) else [value])
        )
        return cls(
            api_key=spec.api_key(model_id),
            base_url=(spec.base_url or DEFAULT_BASE_URL).rstrip("/"),
            model=spec.upstream_model or DEFAULT_MODEL,
            language=str(options.get("language", "en")),
            query=query,
            timeout_s=spec.timeout_s,
            connect_timeout_s=spec.connect_timeout_s,
            keepalive_s=float(options.get("keepalive_s", 4.0)),
            finalize_timeout_s=float(options.get("finalize_timeout_s", 5.0)),
        )

    @property
    def headers(self) -> dict[str, str]:
        """The credential Deepgram checks."""
        return {"Authorization": f"Token {self.api_key}"}

    def params(self, options: TranscribeOptions, **extra: str) -> list[tuple[str, str]]:
        """Query parameters of a request: the model, the language, the catalog's options, then `extra`.

        A list option (`keyterm: [a, b]`) is sent as the parameter repeated, as Deepgram expects.
        """
        language = options.language or self.language
        params = [("model", self.model)] + ([("language", language)] if language else [])
        params += [(name, value) for name, value in self.query if name not in extra]
        return params + list(extra.items())

    @property
    def live_url(self) -> str:
        """The live endpoint: the base URL with a WebSocket scheme."""
        return f"{websocket_url(self.base_url)}/v1/listen"


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def words_of(alternative: dict[str, Any]) -> tuple[Word, ...]:
    """Deepgram's words (punctuated where Deepgram punctuated them) as earshot Words."""
    words = []
    for item in alternative.get("words") or ():
        text = item.get("punctuated_word") or item.get("word") or ""
        confidence = float(item.get("confidence", 1.0))
        words.append(Word(str(text), float(item.get("start", 0.0)), float(item.get("end", 0.0)), confidence))
    return tuple(words)


def segments_of(body: dict[str, Any]) -> list[Segment]:
    """A prerecorded reply's utterances as Segments (or the whole transcript as one, without utterances)."""
    results = body["results"]
    utterances = results.get("utterances")
    segments = []
    if utterances:
        for utterance in utterances:
            text = str(utterance.get("transcript", "")).strip()
            if text:
                start, end = float(utterance["start"]), float(utterance["end"])
                segments.append(Segment(start, end, text, words_of(utterance)))
        return segments
    alternative = results["channels"][0]["alternatives"][0]
    text = str(alternative.get("transcript", "")).strip()
    if not text:
        return []
    words = words_of(alternative)
    start = words[0].start if words else 0.0
    end = words[-1].end if words else float(body.get("metadata", {}).get("duration", 0.0))
    return [Segment(start, end, text, words)]


def parse_message(text: str | bytes) -> dict[str, Any]:
    """One live message as a dict ({} for anything that is not a JSON object)."""
    try:
        message = json.loads(text)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}
