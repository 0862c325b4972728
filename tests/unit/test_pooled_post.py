"""The pooled provider client: keep-alive reuse, a connection dropped while idle, chunked replies,
timeouts, and proxies left to httpx."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from earshot.engines.pooled_post import PooledPoster, direct_route

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"a": true}'
CHUNKED = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"b"\r\n4\r\n: 1}\r\n0\r\n\r\n'


class Provider:
    """A socket server that answers each request with `reply`, closing after `close_after` replies."""

    def __init__(self, reply: bytes, close_after: int | None = None, silent: bool = False) -> None:
        self.reply, self.close_after, self.silent = reply, close_after, silent
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                if self.silent:
                    await asyncio.sleep(10)
                writer.write(self.reply)
                answered += 1
                if self.close_after is not None and answered >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


async def serve(provider: Provider) -> AsyncIterator[str]:
    server = await asyncio.start_server(provider.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1/audio/transcriptions"
    finally:
        server.close()


async def post(poster: PooledPoster, url: str) -> tuple[int, bytes]:
    reply = await poster.post(url, {"Authorization": "Bearer k"}, "application/octet-stream", b"x" * 1000)
    return reply.status, reply.body


async def test_replies_come_back_whole_on_one_kept_connection() -> None:
    provider = Provider(OK)
    poster = PooledPoster(timeout_s=5, connect_timeout_s=5)
    async for url in serve(provider):
        assert [await post(poster, url) for _ in range(3)] == [(200, b'{"a": true}')] * 3
        assert provider.connections == 1
    poster.close()


async def test_a_connection_dropped_while_idle_is_replaced_without_an_error() -> None:
    provider = Provider(OK, close_after=1)
    poster = PooledPoster(timeout_s=5, connect_timeout_s=5)
    async for url in serve(provider):
        assert await post(poster, url) == (200, b'{"a": true}')
        assert await post(poster, url) == (200, b'{"a": true}')
        assert provider.connections == 2
    poster.close()


async def test_a_chunked_reply_is_read_whole() -> None:
    poster = PooledPoster(timeout_s=5, connect_timeout_s=5)
    async for url in serve(Provider(CHUNKED)):
        assert await post(poster, url) == (200, b'{"b": 1}')
    poster.close()


async def test_a_reply_that_never_comes_times_out() -> None:
    poster = PooledPoster(timeout_s=0.2, connect_timeout_s=5)
    async for url in serve(Provider(OK, silent=True)):
        with pytest.raises(TimeoutError):
            await post(poster, url)
    poster.close()


def test_a_proxy_in_the_environment_sends_the_call_through_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    assert direct_route("https://api.openai.com/v1/audio/transcriptions")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert not direct_route("https://api.openai.com/v1/audio/transcriptions")
    monkeypatch.setenv("NO_PROXY", "api.openai.com")
    assert direct_route("https://api.openai.com/v1/audio/transcriptions")
