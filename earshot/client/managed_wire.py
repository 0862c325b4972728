"""The client side of earshot's managed protocol (WS /ws/transcribe), without I/O."""

from __future__ import annotations

import json
from typing import Any

from earshot.client.events import CreditsLow, ServerError, SessionEnd, Transcript, UtteranceEnd
from earshot.client.wire import Ready, Settled, WireEvent, http_to_ws, json_events, stream_settings

# Errors that retrying with the same key and settings can't fix.
FATAL_CODES = frozenset({"AUTH_FAILED", "MODEL_NOT_ALLOWED", "INSUFFICIENT_CREDITS", "BAD_REQUEST"})


class ManagedWire:
    """Speaks /ws/transcribe: `auth` first, binary PCM16, `close` at the end."""

    ready_on_open = False

    def __init__(
        self,
        server_url: str,
        api_key: str,
        *,
        sample_rate: int = 16_000,
        channels: int = 1,
        model: str | None = None,
        language: str | None = None,
        interim_results: bool = True,
    ) -> None:
        self.server_url = server_url
        self.sample_rate = sample_rate
        self.channels = channels
        self._api_key = api_key
        self._config = stream_settings(sample_rate, channels, model, language, interim_results)

    def url(self) -> str:
        """The server's /ws/transcribe."""
        base = http_to_ws(self.server_url)
        return base if base.endswith("/ws/transcribe") else f"{base}/ws/transcribe"

    def headers(self) -> dict[str, str]:
        """None: the key goes in the first message."""
        return {}

    def opening(self) -> list[str]:
        """The `auth` message."""
        return [json.dumps({"type": "auth", "token": self._api_key, "config": self._config})]

    def parse(self, text: str) -> list[WireEvent]:
        """Events in one server message; unknown message types are ignored."""
        return json_events(text, _events)

    def keepalive(self) -> str:
        """`keepalive`."""
        return '{"type":"keepalive"}'

    def finish(self) -> str:
        """`close`: the server flushes, sends the last finals and `session_end`, then closes."""
        return '{"type":"close"}'


def _events(message: dict[str, Any]) -> list[WireEvent]:
    kind = message.get("type")
    if kind == "ready":
        return [Ready()]
    if kind == "transcript":
        return [
            Transcript(
                str(message.get("text", "")),
                bool(message.get("is_final")),
                float(message.get("start", 0.0)),
                float(message.get("end", 0.0)),
            )
        ]
    if kind == "utterance_end":
        end = float(message.get("end", 0.0))
        return [UtteranceEnd(end), Settled(end)]
    if kind == "credits_low":
        return [CreditsLow(float(message.get("seconds_remaining", 0.0)))]
    if kind == "error":
        code = str(message.get("code", "UNKNOWN"))
        return [ServerError(code, str(message.get("message", "")), fatal=code in FATAL_CODES)]
    if kind == "session_end":
        return [SessionEnd(float(message.get("seconds_used", 0.0)))]
    return []
