"""earshot listen: live captions from a file, the microphone or stdin, via earshot or straight to Deepgram."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import Annotated, TextIO

import typer

from earshot.client import (
    DEEPGRAM_URL,
    AudioSource,
    AuthError,
    CreditsLow,
    FileSource,
    MicrophoneSource,
    MicrophoneUnavailable,
    ServerError,
    SessionEnd,
    StdinSource,
    StreamingTranscriber,
    TranscriberError,
    Transcript,
    UtteranceEnd,
)

# Exit statuses: 1 the server could not be reached or the connection was lost, 2 bad usage, 3 refused
# (key, model or credit).
EXIT_CONNECTION = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
_EVENT_TYPES = {
    Transcript: "transcript",
    UtteranceEnd: "utterance_end",
    CreditsLow: "credits_low",
    ServerError: "error",
    SessionEnd: "session_end",
}


class Captions:
    """Renders events for a terminal: the interim line rewritten in place, finals appended to it."""

    def __init__(self, out: TextIO, *, live: bool) -> None:
        self.out = out
        self.live = live
        self._line = ""

    def on_interim(self, event: Transcript) -> None:
        if self.live:
            self._show(f"{self._line} \x1b[2m{event.text}\x1b[0m".strip())

    def on_final(self, event: Transcript) -> None:
        if not self.live:
            self.out.write(event.text + "\n")
            self.out.flush()
            return
        self._line = f"{self._line} {event.text}".strip()
        self._show(self._line)

    def on_utterance_end(self, event: UtteranceEnd) -> None:
        if self.live and self._line:
            self._show(self._line)
            self.out.write("\n")
            self.out.flush()
            self._line = ""

    def close(self) -> None:
        """End the last line."""
        self.on_utterance_end(UtteranceEnd(0.0))

    def _show(self, text: str) -> None:
        # Carriage return and clear-to-end rewrite the current line.
        self.out.write("\r\x1b[K" + text)
        self.out.flush()


def json_line(event: object) -> str:
    """One event as a JSON object with its `type`."""
    fields = dataclasses.asdict(event)  # type: ignore[call-overload]
    return json.dumps({"type": _EVENT_TYPES[type(event)], **fields})


def _source(
    file: Path | None, mic: bool, stdin: bool, fast: bool, sample_rate: int, channels: int
) -> AudioSource:
    if sum((file is not None, mic, stdin)) != 1:
        raise _usage("give exactly one of --file, --mic or --stdin")
    if file is not None:
        if not file.is_file():
            raise _usage(f"no such file: {file}")
        return FileSource(file, realtime=not fast)
    if mic:
        try:
            MicrophoneSource.check()
        except MicrophoneUnavailable as e:
            raise _fail(str(e), EXIT_USAGE) from e
        return MicrophoneSource(sample_rate=sample_rate, channels=channels)
    return StdinSource(sample_rate=sample_rate, channels=channels)


def _usage(message: str) -> typer.Exit:
    return _fail(message, EXIT_USAGE)


def _fail(message: str, code: int) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def listen(
    file: Annotated[Path | None, typer.Option("--file", help="Transcribe an audio file (any format)")] = None,
    mic: Annotated[
        bool, typer.Option("--mic", help="Transcribe the microphone (needs the mic extra)")
    ] = False,
    stdin: Annotated[
        bool, typer.Option("--stdin", help="Transcribe raw PCM16 little-endian on stdin")
    ] = False,
    server: Annotated[str, typer.Option(help="earshot server URL (managed mode)")] = "http://127.0.0.1:8000",
    key: Annotated[str | None, typer.Option(help="earshot API key", envvar="EARSHOT_API_KEY")] = None,
    byok: Annotated[bool, typer.Option("--byok", help="Talk to Deepgram directly with your own key")] = False,
    deepgram_key: Annotated[
        str | None, typer.Option(help="Deepgram API key (--byok)", envvar="DEEPGRAM_API_KEY")
    ] = None,
    deepgram_url: Annotated[str, typer.Option(help="Deepgram-compatible base URL (--byok)")] = DEEPGRAM_URL,
    model: Annotated[str | None, typer.Option(help="Model (default: the server's)")] = None,
    language: Annotated[str | None, typer.Option(help="Language code, e.g. en")] = None,
    sample_rate: Annotated[int, typer.Option(help="Sample rate of --stdin or --mic audio")] = 16_000,
    channels: Annotated[int, typer.Option(help="Channels of --stdin or --mic audio")] = 1,
    fast: Annotated[bool, typer.Option("--fast", help="Send --file as fast as the server takes it")] = False,
    interim: Annotated[bool, typer.Option("--interim/--no-interim", help="Show interim results")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per event")] = False,
) -> None:
    """Live captions: stream audio and print the transcript as it is recognised."""
    source = _source(file, mic, stdin, fast, sample_rate, channels)
    captions = Captions(sys.stdout, live=sys.stdout.isatty())

    def emit(event: object) -> None:
        print(json_line(event), flush=True)

    def warn(event: ServerError | CreditsLow) -> None:
        if isinstance(event, CreditsLow):
            print(f"warning: credit running low: {event.seconds_remaining:.0f} s left", file=sys.stderr)
        elif not event.fatal:
            print(f"warning: {event.code}: {event.message}", file=sys.stderr)

    every = ("on_interim", "on_final", "on_utterance_end", "on_error", "on_credits_low", "on_session_end")
    callbacks = (
        dict.fromkeys(every, emit)
        if as_json
        else {
            "on_interim": captions.on_interim,
            "on_final": captions.on_final,
            "on_utterance_end": captions.on_utterance_end,
            "on_error": warn,
            "on_credits_low": warn,
        }
    )
    if byok:
        if not deepgram_key:
            raise _usage("--byok needs --deepgram-key (or DEEPGRAM_API_KEY)")
        transcriber = StreamingTranscriber.deepgram(
            deepgram_key,
            source,
            base_url=deepgram_url,
            model=model,
            language=language,
            interim_results=interim,
            **callbacks,
        )
    else:
        transcriber = StreamingTranscriber.managed(
            server, key or "", source, model=model, language=language, interim_results=interim, **callbacks
        )
    try:
        asyncio.run(_run(transcriber))
    except AuthError as e:
        raise _fail(str(e), EXIT_REFUSED) from e
    except TranscriberError as e:
        raise _fail(str(e), EXIT_CONNECTION) from e
    except MicrophoneUnavailable as e:
        raise _fail(str(e), EXIT_USAGE) from e
    finally:
        if not as_json:
            captions.close()


async def _run(transcriber: StreamingTranscriber) -> None:
    loop = asyncio.get_running_loop()
    # Ctrl-C stops capturing; what was captured is still transcribed before the command exits.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, transcriber.stop)
    await transcriber.run()


def register(app: typer.Typer) -> None:
    """Add `listen` to the earshot command line."""
    app.command()(listen)
