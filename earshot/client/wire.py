"""What the transcriber needs from a wire protocol: a sans-I/O parser and the messages to send."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from earshot.client.events import CreditsLow, ServerError, SessionEnd, Transcript, UtteranceEnd
from earshot.engines.provider_io import websocket_url


@dataclass(frozen=True, slots=True)
class Ready:
    """The server is ready for audio."""


@dataclass(frozen=True, slots=True)
class Settled:
    """Every word in the connection's audio before `until` (seconds) has been given as a final."""

    until: float


WireEvent = Ready | Settled | Transcript | UtteranceEnd | CreditsLow | ServerError | SessionEnd


class Wire(Protocol):
    """One server's streaming protocol, without I/O."""

    sample_rate: int
    channels: int
    # Whether an open socket is ready for audio (else wait for a Ready event).
    ready_on_open: bool

    def url(self) -> str:
        """The WebSocket URL to connect to."""
        ...

    def headers(self) -> dict[str, str]:
        """Handshake headers (the key, where the protocol puts it there)."""
        ...

    def opening(self) -> list[str]:
        """Text messages to send as soon as the socket is open."""
        ...

    def parse(self, text: str) -> list[WireEvent]:
        """Events in one text message from the server."""
        ...

    def keepalive(self) -> str:
        """A message that keeps an idle session open."""
        ...

    def finish(self) -> str:
        """The message saying no more audio will come: flush, then end."""
        ...


def http_to_ws(base_url: str) -> str:
    """`base_url` with an http(s) scheme turned into ws(s), and no trailing slash."""
    return websocket_url(base_url.rstrip("/"))


def stream_settings(
    sample_rate: int, channels: int, model: str | None, language: str | None, interim_results: bool
) -> dict[str, Any]:
    """A linear16 stream's settings, under the names both servers use; model and language only when given."""
    settings: dict[str, Any] = {
        "encoding": "linear16",
        "sample_rate": sample_rate,
        "channels": channels,
        "interim_results": interim_results,
    }
    if model is not None:
        settings["model"] = model
    if language is not None:
        settings["language"] = language
    return settings


def json_events(text: str, events_of: Callable[[dict[str, Any]], list[WireEvent]]) -> list[WireEvent]:
    """The events of one JSON object message; not JSON is a BAD_RESPONSE error, other JSON says nothing."""
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        return [ServerError("BAD_RESPONSE", "the server sent a message that is not JSON")]
    if not isinstance(message, dict):
        return []
    return events_of(message)
