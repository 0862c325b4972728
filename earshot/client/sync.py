"""A thread-friendly wrapper: run a StreamingTranscriber on its own event loop in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import TracebackType

from earshot.client.events import Summary
from earshot.client.transcriber import StreamingTranscriber


class BackgroundTranscriber:
    """Starts a transcription in a thread; callbacks run on that thread. `stop` then `wait` for the result.

    `make` builds the StreamingTranscriber inside the thread's event loop, e.g.
    `BackgroundTranscriber(lambda: StreamingTranscriber.managed(url, key, MicrophoneSource()))`.
    """

    def __init__(self, make: Callable[[], StreamingTranscriber]) -> None:
        self._make = make
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transcriber: StreamingTranscriber | None = None
        self._started = threading.Event()
        self._summary: Summary | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="earshot-transcriber", daemon=True)

    def start(self) -> BackgroundTranscriber:
        """Start the thread; returns at once (connection errors are raised by `wait`)."""
        self._thread.start()
        self._started.wait()
        return self

    def stop(self) -> None:
        """Stop capturing (safe from any thread); what was captured is still transcribed."""
        if self._loop is not None and self._transcriber is not None and not self._loop.is_closed():
            transcriber = self._transcriber
            self._loop.call_soon_threadsafe(transcriber.stop)

    def wait(self, timeout_s: float | None = None) -> Summary:
        """Block until the transcription is complete; its Summary, or the error that ended it."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"the transcription did not end within {timeout_s} s")
        if self._error is not None:
            raise self._error
        assert self._summary is not None
        return self._summary

    def _main(self) -> None:
        async def run() -> Summary:
            self._loop = asyncio.get_running_loop()
            self._transcriber = self._make()
            self._started.set()
            return await self._transcriber.run()

        try:
            self._summary = asyncio.run(run())
        except BaseException as e:  # handed to the caller's thread by wait()
            self._error = e
        finally:
            self._started.set()

    def __enter__(self) -> BackgroundTranscriber:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if exc is None:
            self.wait()
