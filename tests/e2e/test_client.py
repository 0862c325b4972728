"""earshot.client end to end: managed mode on a real server, resuming after a dropped socket, BYOK mode."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import float_to_pcm16
from earshot.client import (
    AuthError,
    BackgroundTranscriber,
    ConnectError,
    FileSource,
    ServerError,
    StreamingTranscriber,
    Transcript,
    UtteranceEnd,
)
from tests.conftest import (
    ADMIN_TOKEN,
    Admin,
    RunningServer,
    shared_audio,
    start_server,
    stop_server,
)
from tests.e2e.realtime_client import silence
from tests.e2e.wer import words
from tests.fakes.deepgram import DeepgramFake
from tests.fakes.server import serving

FIRST = "pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0880.wav"
SECOND = "pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0890.wav"
BYTES_PER_S = 32_000


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("client"), {"EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        yield server
    finally:
        stop_server(server)


class PcmSource:
    """Fixed PCM16 at 16 kHz mono, at real-time pace or as fast as it is read."""

    sample_rate = 16_000
    channels = 1

    def __init__(self, pcm: bytes, realtime: bool = True) -> None:
        self.pcm = pcm
        self.realtime = realtime

    async def chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for index, offset in enumerate(range(0, len(self.pcm), 3200)):
            yield self.pcm[offset : offset + 3200]
            if self.realtime:
                await asyncio.sleep(max(0.0, started + (index + 1) * 0.1 - loop.time()))


async def test_managed_mode_transcribes_a_clip_with_interims_before_finals(keyed: RunningServer) -> None:
    _, key = Admin(keyed).create_key()
    clip = shared_audio(FIRST)
    events: list[Transcript | UtteranceEnd] = []
    summary = await StreamingTranscriber.managed(
        keyed.base_url,
        key,
        FileSource(clip),
        on_interim=events.append,
        on_final=events.append,
        on_utterance_end=events.append,
    ).run()
    finals = [e for e in events if isinstance(e, Transcript) and e.is_final]
    assert words(summary.text) == words(" ".join(e.text for e in finals))
    assert {"he", "was", "young", "man"} <= set(words(summary.text))
    first_final = events.index(finals[0])
    assert any(isinstance(e, Transcript) and not e.is_final for e in events[:first_final]), "interims first"
    assert isinstance(events[-1], UtteranceEnd) and 2.5 <= events[-1].end <= 3.0
    assert summary.seconds_used == summary.seconds_captured == 2.99 and summary.connections == 1


async def test_the_sync_wrapper_runs_in_a_thread_and_a_bad_key_is_an_auth_error(keyed: RunningServer) -> None:
    _, key = Admin(keyed).create_key()
    clip = shared_audio(FIRST)
    finals: list[str] = []

    def transcribe(token: str) -> BackgroundTranscriber:
        source = FileSource(clip, realtime=False)
        return BackgroundTranscriber(
            lambda: StreamingTranscriber.managed(
                keyed.base_url, token, source, on_final=lambda e: finals.append(e.text)
            )
        ).start()

    summary = await asyncio.to_thread(transcribe(key).wait, 30)
    assert summary.text and finals == summary.finals
    with pytest.raises(AuthError, match="AUTH_FAILED"):
        await asyncio.to_thread(transcribe("es_000000000000_nope").wait, 30)


async def test_an_unreachable_server_is_a_connect_error() -> None:
    source = PcmSource(b"\x00" * 3200)
    with pytest.raises(ConnectError, match="can't connect"):
        await StreamingTranscriber.managed("http://127.0.0.1:9", "k", source, ready_timeout_s=2).run()


@dataclass
class DropLog:
    """Audio each connection through the relay delivered to the server, in order."""

    audio: list[bytearray] = field(default_factory=list)


@asynccontextmanager
async def dropping_relay(upstream: str, drop_after_bytes: int) -> AsyncIterator[tuple[str, DropLog]]:
    """A relay to earshot whose first connection dies (no close frame) once it has forwarded enough audio."""
    log = DropLog()

    async def handler(client: ServerConnection) -> None:
        first = not log.audio
        delivered = bytearray()
        log.audio.append(delivered)
        assert client.request is not None
        async with websockets.connect(upstream + client.request.path) as server:

            async def down() -> None:
                async for message in server:
                    await client.send(message)
                await client.close()

            async def up() -> None:
                async for message in client:
                    if isinstance(message, bytes):
                        if first and len(delivered) + len(message) > drop_after_bytes:
                            client.transport.abort()
                            server.transport.abort()
                            return
                        delivered.extend(message)
                    await server.send(message)

            await asyncio.gather(down(), up(), return_exceptions=True)

    async with serve(handler, "127.0.0.1", 0) as relay:
        yield f"ws://127.0.0.1:{relay.sockets[0].getsockname()[1]}", log


def pcm_of(relpath: str) -> bytes:
    return float_to_pcm16(decode_audio(shared_audio(relpath).read_bytes()).samples)


async def test_a_dropped_connection_is_resumed_without_losing_captured_audio(keyed: RunningServer) -> None:
    _, key = Admin(keyed).create_key()
    # Two sentences with a pause between: the first is settled (utterance_end) before the drop mid-second.
    pcm = pcm_of(FIRST) + float_to_pcm16(silence(1.0)) + pcm_of(SECOND) + float_to_pcm16(silence(0.5))
    drop_after = 6 * BYTES_PER_S
    errors: list[ServerError] = []
    async with dropping_relay(keyed.base_url.replace("http://", "ws://"), drop_after) as (url, log):
        transcriber = StreamingTranscriber.managed(url, key, PcmSource(pcm), on_error=errors.append)
        summary = await transcriber.run()
    assert summary.connections == 2 and len(log.audio) == 2 and errors == []
    first, second = bytes(log.audio[0]), bytes(log.audio[1])
    assert pcm.startswith(first) and len(first) <= drop_after
    resumed_at = len(pcm) - len(second)
    assert pcm[resumed_at:] == second, "the second connection carries the rest of the captured audio"
    assert 0 < resumed_at <= len(first), "it resumes where the server had settled the audio, leaving no gap"
    assert summary.seconds_captured == len(pcm) / BYTES_PER_S
    heard = set(words(summary.text))
    assert {"young", "man"} <= heard and {"cold", "selfish"} <= heard


async def test_byok_mode_speaks_deepgram_live_and_reconnects_after_a_1011() -> None:
    fake = DeepgramFake(api_key="dg-key", script="one two three four five six seven eight", final_every_s=1.0)
    pcm = float_to_pcm16(np.zeros(16_000 * 4, dtype=np.float32))
    with serving(fake.app) as server:
        finals: list[Transcript] = []
        interims: list[Transcript] = []
        summary = await StreamingTranscriber.deepgram(
            "dg-key",
            PcmSource(pcm, realtime=False),
            base_url=server.base_url,
            model="nova-3",
            on_final=finals.append,
            on_interim=interims.append,
        ).run()
        assert summary.connections == 1 and summary.seconds_used == 4.0
        assert words(summary.text) == ["one", "two", "three", "four", "five", "six", "seven", "eight"]
        assert interims and [f.start for f in finals] == [0.0, 1.0, 2.0, 3.0]
        (log,) = fake.live_logs
        params = log.params
        assert (params["model"], params["encoding"], params["sample_rate"]) == ("nova-3", "linear16", "16000")
        assert log.controls[-1] == "CloseStream" and log.audio_s == 4.0

        fake.faults.close_1011_after_s = 1.5
        dropped = await StreamingTranscriber.deepgram(
            "dg-key", PcmSource(pcm), base_url=server.base_url, backoff_s=0.1
        ).run()
        fake.faults.reset()
        runs = fake.live_logs[1:]
        assert dropped.connections == len(runs) >= 2 and dropped.seconds_captured == 4.0
        assert [run.close_code for run in runs] == [1011] * (len(runs) - 1) + [1000]
        assert runs[-1].controls[-1] == "CloseStream"
        # Every second reached the fake; only what it had not finalized (under a second each time) twice.
        delivered_s = sum(run.audio_s for run in runs)
        assert 4.0 <= delivered_s < 4.0 + (len(runs) - 1) * 1.0

        with pytest.raises(AuthError, match="401"):
            await StreamingTranscriber.deepgram("wrong", PcmSource(pcm), base_url=server.base_url).run()


async def test_byok_mode_against_earshots_own_deepgram_listen(keyed: RunningServer) -> None:
    _, key = Admin(keyed).create_key()
    finals: list[Transcript] = []
    summary = await StreamingTranscriber.deepgram(
        key, FileSource(shared_audio(FIRST)), base_url=keyed.base_url, on_final=finals.append
    ).run()
    assert {"young", "man"} <= set(words(summary.text)) and summary.connections == 1
    assert summary.seconds_used == 2.99 and finals[-1].end <= 2.99
    with pytest.raises(AuthError, match="401"):
        await StreamingTranscriber.deepgram(
            "es_000000000000_nope", PcmSource(b""), base_url=keyed.base_url
        ).run()


def test_the_transcript_events_are_plain_json() -> None:
    from earshot.cli.listen import json_line

    line = json.loads(json_line(Transcript("hi", True, 0.5, 1.0)))
    assert line == {"type": "transcript", "text": "hi", "is_final": True, "start": 0.5, "end": 1.0}
