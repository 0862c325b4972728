"""The client's sans-I/O parts: both wires, the resume buffer, and the terminal captions."""

from __future__ import annotations

import io
import json
from urllib.parse import parse_qs, urlsplit

from earshot.cli.listen import Captions
from earshot.client import (
    CreditsLow,
    DeepgramWire,
    ManagedWire,
    ServerError,
    SessionEnd,
    Transcript,
    UtteranceEnd,
)
from earshot.client.buffer import AudioBuffer
from earshot.client.wire import Ready, Settled


def test_managed_wire_authenticates_in_its_first_message() -> None:
    wire = ManagedWire("https://earshot.example:8443/", "es_k", sample_rate=8000, model="pocketsphinx")
    assert wire.url() == "wss://earshot.example:8443/ws/transcribe" and wire.headers() == {}
    (auth,) = wire.opening()
    assert json.loads(auth) == {
        "type": "auth",
        "token": "es_k",
        "config": {
            "sample_rate": 8000,
            "channels": 1,
            "encoding": "linear16",
            "interim_results": True,
            "model": "pocketsphinx",
        },
    }
    assert json.loads(wire.finish()) == {"type": "close"}
    assert json.loads(wire.keepalive()) == {"type": "keepalive"}


def test_managed_wire_parses_every_server_message() -> None:
    wire = ManagedWire("http://h", "k")
    assert wire.parse('{"type": "ready", "session_id": "s", "model": "m"}') == [Ready()]
    assert wire.parse('{"type": "transcript", "text": "hi", "is_final": true, "start": 1, "end": 2}') == [
        Transcript("hi", True, 1.0, 2.0)
    ]
    assert wire.parse('{"type": "utterance_end", "end": 2.5}') == [UtteranceEnd(2.5), Settled(2.5)]
    assert wire.parse('{"type": "credits_low", "seconds_remaining": 30}') == [CreditsLow(30.0)]
    assert wire.parse('{"type": "error", "code": "AUTH_FAILED", "message": "no"}') == [
        ServerError("AUTH_FAILED", "no", fatal=True)
    ]
    assert wire.parse('{"type": "error", "code": "UPSTREAM_ERROR", "message": "x"}')[0] == ServerError(
        "UPSTREAM_ERROR", "x", fatal=False
    )
    assert wire.parse('{"type": "session_end", "seconds_used": 3.5}') == [SessionEnd(3.5)]
    assert wire.parse('{"type": "something_new"}') == [] and wire.parse("[]") == []
    assert wire.parse("nonsense")[0].code == "BAD_RESPONSE"  # type: ignore[union-attr]


def test_deepgram_wire_configures_the_stream_in_the_query_and_keys_the_handshake() -> None:
    wire = DeepgramWire("dg", base_url="http://127.0.0.1:5000", sample_rate=8000, channels=2, language="en")
    url = urlsplit(wire.url())
    assert (url.scheme, url.netloc, url.path) == ("ws", "127.0.0.1:5000", "/v1/listen")
    assert parse_qs(url.query) == {
        "encoding": ["linear16"],
        "sample_rate": ["8000"],
        "channels": ["2"],
        "interim_results": ["true"],
        "language": ["en"],
    }
    assert wire.headers() == {"Authorization": "Token dg"} and wire.opening() == []
    assert json.loads(wire.finish()) == {"type": "CloseStream"}
    assert json.loads(wire.keepalive()) == {"type": "KeepAlive"}


def test_deepgram_wire_parses_results_utterance_ends_and_metadata() -> None:
    wire = DeepgramWire("dg")

    def results(text: str, is_final: bool) -> str:
        alternatives = [{"transcript": text, "confidence": 0.9, "words": []}]
        return json.dumps(
            {
                "type": "Results",
                "start": 1.0,
                "duration": 0.5,
                "is_final": is_final,
                "channel": {"alternatives": alternatives},
            }
        )

    assert wire.parse(results("hel", False)) == [Transcript("hel", False, 1.0, 1.5)]
    assert wire.parse(results("hello", True)) == [Transcript("hello", True, 1.0, 1.5), Settled(1.5)]
    assert wire.parse(results("", True)) == [Settled(1.5)], "an empty final only settles its audio"
    assert wire.parse('{"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 1.4}') == [
        UtteranceEnd(1.4)
    ]
    assert wire.parse('{"type": "Metadata", "duration": 4.25, "channels": 1}') == [SessionEnd(4.25)]
    assert wire.parse('{"type": "SpeechStarted", "timestamp": 0.3}') == []


def test_the_buffer_reads_across_chunks_and_forgets_only_whole_chunks() -> None:
    buffer = AudioBuffer()
    for chunk in (b"abcd", b"efgh", b"ij"):
        buffer.append(chunk)
    assert (buffer.start, buffer.end) == (0, 10)
    assert buffer.read(2, 5) == b"cdefg" and buffer.read(8, 100) == b"ij" and buffer.read(10, 4) == b""
    buffer.drop_before(6)
    assert buffer.start == 4 and buffer.read(4, 6) == b"efghij"


def test_captions_rewrite_the_interim_line_and_append_finals() -> None:
    out = io.StringIO()
    captions = Captions(out, live=True)
    captions.on_interim(Transcript("hel", False, 0, 1))
    captions.on_final(Transcript("hello", True, 0, 1))
    captions.on_interim(Transcript("wor", False, 1, 2))
    captions.on_final(Transcript("world", True, 1, 2))
    captions.on_utterance_end(UtteranceEnd(2))
    assert out.getvalue().split("\r\x1b[K")[-1] == "hello world\n"
    assert "\x1b[2mwor\x1b[0m" in out.getvalue()
    piped = io.StringIO()
    plain = Captions(piped, live=False)
    plain.on_interim(Transcript("hel", False, 0, 1))
    plain.on_final(Transcript("hello", True, 0, 1))
    plain.close()
    assert piped.getvalue() == "hello\n"
