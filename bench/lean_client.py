"""A lean HTTP/1.1 client for load benches: one prebuilt request per connection, sent again and again.

A bench that drives servers from the same 2 cores must spend little on its own side: httpx costs about 3 ms
of CPU per upload, more than the gateway under test. This client writes bytes built once and reads the reply
with a regex and `readexactly`, on uvloop when it is installed (about 0.1 ms per request).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:\s*chunked", re.IGNORECASE)


class RequestFailed(RuntimeError):
    """A request got no reply, or a reply other than 200; the message says which."""


def multipart_upload(
    url: str, path: str, key: str, fields: dict[str, str], file_name: str, file_type: str, file: bytes
) -> bytes:
    """A whole POST of a multipart form, fields first and then the file (the order the OpenAI SDK uses)."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
        f"Content-Type: {file_type}\r\n\r\n".encode()
        + file
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {urlsplit(url).netloc}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n"
        "User-Agent: earshot-bench\r\nAccept: application/json\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Connection:
    """One keep-alive connection that sends the same request each time."""

    url: str
    request: bytes
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        parts = urlsplit(self.url)
        assert parts.hostname is not None and parts.port is not None
        self.reader, self.writer = await asyncio.open_connection(parts.hostname, parts.port)

    async def send(self) -> None:
        """Send the request and read the whole reply; RequestFailed unless it is a 200."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(self.request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = _CONTENT_LENGTH.search(head)
            if length is not None:
                body = await self.reader.readexactly(int(length[1]))
            elif _CHUNKED.search(head):
                body = await self._chunks()
            else:
                raise RequestFailed(f"a reply with no length: {head[:200]!r}")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            await self.close()
            raise RequestFailed(f"{type(e).__name__}: {e}") from e
        if head[9:12] != b"200":
            raise RequestFailed(f"HTTP {head[9:12].decode()}: {body[:300].decode(errors='replace')}")

    async def _chunks(self) -> bytes:
        assert self.reader is not None
        body = bytearray()
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += await self.reader.readexactly(size + 2)
            if size == 0:
                return bytes(body)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.reader = None


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop where it is installed (a cheaper event loop for the bench's own side)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
