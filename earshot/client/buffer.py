"""Captured audio held until the server has settled it, so a new connection can resume without a gap."""

from __future__ import annotations

from collections import deque


class AudioBuffer:
    """Bytes addressed by their offset from the first captured byte; old bytes are dropped on request."""

    def __init__(self) -> None:
        self._chunks: deque[tuple[int, bytes]] = deque()
        self.start = 0
        self.end = 0

    def append(self, chunk: bytes) -> None:
        """Add captured bytes at the end."""
        if chunk:
            self._chunks.append((self.end, chunk))
            self.end += len(chunk)

    def read(self, offset: int, max_bytes: int) -> bytes:
        """Up to `max_bytes` from `offset` (no further than what was captured)."""
        pieces: list[bytes] = []
        wanted_end = min(self.end, offset + max_bytes)
        for chunk_start, chunk in self._chunks:
            chunk_end = chunk_start + len(chunk)
            if chunk_end <= offset:
                continue
            if chunk_start >= wanted_end:
                break
            pieces.append(chunk[max(0, offset - chunk_start) : wanted_end - chunk_start])
        return b"".join(pieces)

    def drop_before(self, offset: int) -> None:
        """Forget whole chunks that end at or before `offset`."""
        while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= offset:
            chunk_start, chunk = self._chunks.popleft()
            self.start = chunk_start + len(chunk)
