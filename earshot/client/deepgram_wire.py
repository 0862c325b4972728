"""The client side of Deepgram's live protocol (WS /v1/listen), without I/O: bring your own key."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from earshot.client.events import ServerError, SessionEnd, Transcript, UtteranceEnd
from earshot.client.wire import Settled, WireEvent, http_to_ws, json_events, stream_settings

DEEPGRAM_URL = "wss://api.deepgram.com"


class DeepgramWire:
    """Speaks Deepgram's /v1/listen with linear16 audio; the socket is ready once it is open."""

    ready_on_open = True

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEEPGRAM_URL,
        sample_rate: int = 16_000,
        channels: int = 1,
        model: str | None = None,
        language: str | None = None,
        interim_results: bool = True,
    ) -> None:
        self.base_url = base_url
        self.sample_rate = sample_rate
        self.channels = channels
        self._api_key = api_key
        settings = stream_settings(sample_rate, channels, model, language, interim_results)
        self._query = {name: _query_value(value) for name, value in settings.items()}

    def url(self) -> str:
        """/v1/listen on the base URL, with the stream's parameters in the query."""
        base = http_to_ws(self.base_url)
        path = base if base.endswith("/v1/listen") else f"{base}/v1/listen"
        return f"{path}?{urlencode(self._query)}"

    def headers(self) -> dict[str, str]:
        """`Authorization: Token KEY`."""
        return {"Authorization": f"Token {self._api_key}"}

    def opening(self) -> list[str]:
        """Nothing: the query configures the stream."""
        return []

    def parse(self, text: str) -> list[WireEvent]:
        """Events in one server message: Results, UtteranceEnd, Metadata, errors."""
        return json_events(text, _events)

    def keepalive(self) -> str:
        """`KeepAlive`."""
        return '{"type":"KeepAlive"}'

    def finish(self) -> str:
        """`CloseStream`: the server flushes, sends Metadata, and closes."""
        return '{"type":"CloseStream"}'


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _events(message: dict[str, Any]) -> list[WireEvent]:
    kind = message.get("type")
    if kind == "Results":
        return _results(message)
    if kind == "UtteranceEnd":
        return [UtteranceEnd(float(message.get("last_word_end", 0.0)))]
    if kind == "Metadata":
        return [SessionEnd(float(message.get("duration", 0.0)))]
    if kind == "Error" or "err_code" in message:
        code = str(message.get("err_code") or message.get("variant") or "ERROR")
        text_of = message.get("description") or message.get("err_msg") or message.get("message") or ""
        return [ServerError(code, str(text_of))]
    return []


def _results(message: dict[str, Any]) -> list[WireEvent]:
    start = float(message.get("start", 0.0))
    end = start + float(message.get("duration", 0.0))
    is_final = bool(message.get("is_final"))
    alternatives = (message.get("channel") or {}).get("alternatives") or [{}]
    text = str(alternatives[0].get("transcript", ""))
    events: list[WireEvent] = []
    if text or not is_final:
        events.append(Transcript(text, is_final, start, end))
    if is_final:
        events.append(Settled(end))
    return events
