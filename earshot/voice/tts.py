"""The Synthesizer protocol: what every speech synthesis engine and provider offers earshot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from earshot.audio.encode import SpeechFormat

MIN_SPEED, MAX_SPEED = 0.25, 4.0


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    """Text to speak and how, independent of wire protocol."""

    text: str
    voice: str
    response_format: SpeechFormat = SpeechFormat.MP3
    speed: float = 1.0
    # How to speak (tone, accent): passed to providers that take it; espeak-ng has no use for it.
    instructions: str | None = None


class Synthesizer(Protocol):
    """A speech synthesis engine: text in, the encoded audio of one response out, as it is made."""

    name: str

    @property
    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def synthesize(self, request: SpeechRequest) -> AsyncIterator[bytes]:
        """The response body in `request.response_format`, piece by piece.

        Raises before the first piece for what the engine can't do (UnknownVoice, UpstreamError); closing the
        iterator early stops the synthesis.
        """
        ...
