"""One-shot POSTs to a provider on pooled keep-alive HTTP/1.1 connections, parsed by httptools.

A relayed transcription is one request and one small JSON reply. httpx spends about 2 ms of CPU on each
(anyio, h11 and its models), more than the rest of the gateway's work on the request; this client writes the
prebuilt request bytes to a pooled connection and lets httptools' C parser read the reply, for about a tenth
of that. It speaks plain HTTP/1.1 over TCP or TLS (httpx's certificate settings), with a connect timeout and a
timeout on each wait for the reply's next bytes, as httpx's timeouts are. It has no proxy support: a provider
reached through a proxy configured in the environment keeps going through httpx (`direct_route`).

Failures are raised as they come (OSError, TimeoutError, `ReplyUnreadable`) for the engine to turn into its
UpstreamError; a connection the provider closed while it sat idle is replaced once, before any reply byte.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools
import httpx

from earshot import __version__

USER_AGENT = f"earshot/{__version__}"
MAX_IDLE_PER_ORIGIN = 32


class ReplyUnreadable(Exception):
    """The provider's bytes are not an HTTP/1.1 reply, or the connection closed in the middle of one."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A provider's whole reply."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def as_httpx(self) -> httpx.Response:
        """The reply as an httpx Response, for the error mapping that reads one (upstream.status_error)."""
        return httpx.Response(self.status, headers=self.headers, content=self.body)


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> tuple[Origin, str]:
        """The origin of an http(s) URL and its request target (path and query)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port), target

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def direct_route(url: str) -> bool:
    """Whether a request to `url` goes straight to it: no proxy in the environment applies to its host."""
    scheme = urlsplit(url).scheme
    host = urlsplit(url).hostname or ""
    proxies = urllib.request.getproxies()
    if not (proxies.get(scheme) or proxies.get("all")):
        return True
    return bool(urllib.request.proxy_bypass(host))


class _Connection(asyncio.Protocol):
    """One connection and the reply it is reading (one request at a time)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._waiter: asyncio.Future[Reply] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timeout_s = 0.0
        self.received = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are asyncio.Transport in behaviour, not by class.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ReplyUnreadable("the provider closed the connection before its reply was complete"))

    def data_received(self, data: bytes) -> None:
        if self._parser is None:
            # Bytes nobody asked for: the connection cannot be trusted for another request.
            self.close()
            return
        self.received = True
        self._arm_timer()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(ReplyUnreadable(f"malformed HTTP reply: {e}"))
            self.close()

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        assert self._parser is not None
        reply = Reply(self._parser.get_status_code(), self._headers, b"".join(self._body))
        if not self._parser.should_keep_alive():
            self.close()
        self._parser = None
        self._disarm_timer()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(reply)

    async def exchange(self, request: bytes, timeout_s: float) -> Reply:
        """Send the request and wait for its whole reply, at most `timeout_s` between its bytes."""
        assert self.transport is not None
        self._parser = httptools.HttpResponseParser(self)
        self._headers, self._body, self.received = [], [], False
        self._waiter = self._loop.create_future()
        self._timeout_s = timeout_s
        self.transport.write(request)
        self._arm_timer()
        try:
            return await self._waiter
        finally:
            self._disarm_timer()
            self._waiter = None

    def _arm_timer(self) -> None:
        self._disarm_timer()
        self._timer = self._loop.call_later(self._timeout_s, self._timed_out)

    def _disarm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(TimeoutError("the provider's reply timed out"))
        self.close()

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


@dataclass
class PooledPoster:
    """POSTs to providers over keep-alive connections, a few kept idle per origin."""

    timeout_s: float
    connect_timeout_s: float
    _idle: dict[Origin, list[_Connection]] = field(default_factory=dict)
    _tls: ssl.SSLContext | None = None

    async def post(self, url: str, headers: dict[str, str], content_type: str, body: bytes) -> Reply:
        """POST `body` and return the whole reply, whatever its status."""
        origin, target = Origin.of(url)
        lines = [
            f"POST {target} HTTP/1.1",
            f"Host: {origin.host_header}",
            f"User-Agent: {USER_AGENT}",
            "Accept: application/json",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        reused = self._take_idle(origin)
        if reused is not None:
            try:
                reply = await reused.exchange(request, self.timeout_s)
            except ReplyUnreadable:
                if reused.received:
                    raise
                # Closed by the provider while it sat idle, before any of the reply came: a fresh one.
            else:
                self._keep(origin, reused)
                return reply
        connection = await self._connect(origin)
        try:
            reply = await connection.exchange(request, self.timeout_s)
        except BaseException:
            connection.close()
            raise
        self._keep(origin, connection)
        return reply

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        return None

    def _keep(self, origin: Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if connection.closed or len(idle) >= MAX_IDLE_PER_ORIGIN:
            connection.close()
            return
        idle.append(connection)

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = None
        if origin.scheme == "https":
            if self._tls is None:
                # httpx's certificate settings (certifi, or SSL_CERT_FILE / SSL_CERT_DIR), as its client has.
                self._tls = httpx.create_ssl_context(trust_env=True)
            tls = self._tls
        connecting = loop.create_connection(
            lambda: _Connection(loop),
            origin.host,
            origin.port,
            ssl=tls,
            server_hostname=origin.host if tls is not None else None,
        )
        _, connection = await asyncio.wait_for(connecting, self.connect_timeout_s)
        return connection

    def close(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
