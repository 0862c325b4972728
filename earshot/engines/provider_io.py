"""Provider plumbing shared by every provider engine (and the Realtime relay), without leaks.

A refused WebSocket handshake becomes the same UpstreamError an HTTP reply with that status would, a connect
failure is transient, a close is judged by its code, and a reply earshot cannot read is logged at DEBUG only.
"""

from __future__ import annotations

import io
import logging
import wave

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.base import UpstreamError
from earshot.engines.upstream import closed_error, reference, status_error, transport_error

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4 * 1024 * 1024


async def open_socket(
    provider: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    connect_timeout_s: float,
    ping_interval_s: float | None = 20.0,
    ping_timeout_s: float | None = 20.0,
    close_timeout_s: float = 5.0,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    trust_env: bool = False,
) -> ClientConnection:
    """Connect to a provider's socket; every failure is an UpstreamError with no URL or key in it.

    `trust_env` lets a proxy configured in the environment carry the connection, as httpx's option does.
    """
    try:
        return await websockets.connect(
            url,
            additional_headers=headers,
            open_timeout=connect_timeout_s,
            ping_interval=ping_interval_s,
            ping_timeout=ping_timeout_s,
            close_timeout=close_timeout_s,
            max_size=max_message_bytes,
            proxy=True if trust_env else None,
        )
    except InvalidStatus as e:
        refused = httpx.Response(
            e.response.status_code,
            headers=list(e.response.headers.raw_items()),
            content=bytes(e.response.body or b""),
        )
        raise status_error(provider, refused) from e
    except (OSError, TimeoutError, InvalidHandshake) as e:
        raise transport_error(provider, e) from e


def websocket_url(base_url: str) -> str:
    """The ws:// or wss:// form of an http:// or https:// base URL (a ws:// or wss:// one as it is)."""
    if base_url.startswith("https://"):
        return "wss://" + base_url.removeprefix("https://")
    if base_url.startswith("http://"):
        return "ws://" + base_url.removeprefix("http://")
    return base_url


class HttpProviderEngine:
    """The start and stop of an engine that calls its provider through one pooled HTTP client."""

    def __init__(self, timeout_s: float, connect_timeout_s: float, *, trust_env: bool = False) -> None:
        self.ready = False
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._trust_env = trust_env
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Open the HTTP client (connections are pooled across requests)."""
        self._client = httpx.AsyncClient(timeout=self._timeout, trust_env=self._trust_env)
        self.ready = True

    async def stop(self) -> None:
        """Close the HTTP client."""
        self.ready = False
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _started_client(self) -> httpx.AsyncClient:
        """The HTTP client, or a transient 503 UpstreamError before `start`."""
        if self._client is None:
            raise UpstreamError("the engine is not started", transient=True, status=503)
        return self._client


def close_code(error: ConnectionClosed) -> int:
    """The close code that ended a connection: the provider's, else ours (1011 after a ping timeout)."""
    if error.rcvd is not None:
        return error.rcvd.code
    if error.sent is not None:
        return error.sent.code
    return 1006


def connection_lost(provider: str, error: ConnectionClosed) -> UpstreamError:
    """The UpstreamError for a socket that closed under us."""
    reason = error.rcvd.reason if error.rcvd is not None else ""
    return closed_error(provider, close_code(error), reason)


def unreadable_reply(provider: str, detail: str) -> UpstreamError:
    """The UpstreamError for a reply earshot cannot read (the reply itself goes to DEBUG only)."""
    ref = reference()
    log.debug("upstream %s sent an unreadable reply (ref %s): %s", provider, ref, detail[:2000])
    message = f"the upstream provider sent an unreadable reply (ref {ref})"
    return UpstreamError(message, transient=True, status=502)


def wav_bytes(audio: Audio) -> bytes:
    """The audio as a 16 kHz mono PCM16 WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(ENGINE_RATE_HZ)
        out.writeframes(audio.pcm16())
    return buffer.getvalue()
