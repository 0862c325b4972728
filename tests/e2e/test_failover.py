"""Live failover through a real server: the primary upstream dies mid-sentence and the caller loses nothing.

The primary is the fake Deepgram in its listening mode (it decodes what it hears with pocketsphinx, so its
words depend on the audio); the fallback is earshot's local pocketsphinx engine. Both hear the same audio
through the same recogniser, so a session that fails over should read like one that didn't.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI

from earshot.audio.pcm import ENGINE_RATE_HZ
from earshot.engines.pocketsphinx_decode import PocketsphinxConfig, decode_region
from tests.conftest import (
    ADMIN_TOKEN,
    Admin,
    RunningServer,
    sqlite_url,
    start_server,
    stop_server,
)
from tests.e2e.catalogs import FAKE_KEY_ENV, openai_model, write_catalog
from tests.e2e.realtime_client import EventLog, chunks, pcm24, silence, speech, trimmed
from tests.e2e.session_end import the_record
from tests.e2e.wer import word_errors, words
from tests.fakes.deepgram import DeepgramFake
from tests.fakes.openai import OPENAI_KEY, FakeOpenAI
from tests.fakes.server import serving

DEEPGRAM_KEY = "dg-failover-key-31c7"
KEY_ENV = "EARSHOT_TEST_FAKE_DEEPGRAM_KEY"
SENTENCES = [
    ("pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0870.wav", 7.1),
    ("pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0890.wav", 5.3),
    ("pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0920.wav", 6.05),
]
TRUE_TEXT = (
    "and mister john dashwood had then leisure to consider how much there might be prudently in his power to"
    " do for them unless to be rather cold hearted and rather selfish is to be ill disposed had he married a"
    " more a amiable woman he might have been made still more respectable than he was"
)
CHUNK_MS = 40
SPEEDUP = 2.0
# Words of jitter allowed where the recogniser changes: the phrase cut by the failure is decoded again by the
# fallback from the last final on, and a different decoder may hear a word at its edge differently.
SWITCH_JITTER_WORDS = 2
_decoding = threading.Lock()


def pocketsphinx_words(pcm16: bytes, rate_hz: int) -> list[tuple[str, float, float]]:
    """What the fake Deepgram hears: pocketsphinx's words in 16 kHz PCM16 audio."""
    assert rate_hz == ENGINE_RATE_HZ
    with _decoding:
        segment = decode_region(PocketsphinxConfig(), pcm16, 0.0)
    return [(word.word, word.start, word.end) for word in segment.words]


@dataclass
class Live:
    server: RunningServer
    database_url: str
    fake: DeepgramFake
    admin: Admin


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp: Path = tmp_path_factory.mktemp("failover")
    fake = DeepgramFake(api_key=DEEPGRAM_KEY, recognise=pocketsphinx_words)
    with serving(fake.app) as fake_server:
        catalog = write_catalog(
            tmp / "catalog.yaml",
            {
                "listener": {
                    "engine": "deepgram",
                    "base_url": fake_server.base_url,
                    "api_key_env": KEY_ENV,
                    "fallbacks": ["local"],
                    "price": 0.01,
                },
                "local": {"engine": "pocketsphinx"},
            },
            default_model="listener",
        )
        env = {"EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN, "EARSHOT_CONFIG": str(catalog), KEY_ENV: DEEPGRAM_KEY}
        server = start_server(tmp, env)
        try:
            yield Live(server, sqlite_url(tmp), fake, Admin(server))
        finally:
            stop_server(server)


def three_sentences() -> tuple[np.ndarray, float]:
    """The sentences with pauses between them, and where (in engine audio) the second one is half said."""
    parts = [trimmed(speech(path)) for path, _ in SENTENCES]
    gap = silence(1.2)
    audio = np.concatenate([silence(0.5), parts[0], gap, parts[1], gap, parts[2], silence(2.0)])
    # The engine hears each turn's speech with a little padding, not the pauses between turns.
    mid_second_s = (len(parts[0]) + len(parts[1]) / 2) / ENGINE_RATE_HZ
    return audio, mid_second_s


async def stream_session(
    server: RunningServer, key: str, audio: np.ndarray, model: str = "listener"
) -> EventLog:
    """Stream the audio over /v1/realtime with the openai SDK; the events once every turn is transcribed."""
    sdk = AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)
    log = EventLog()
    async with sdk.realtime.connect(extra_query={"intent": "transcription", "model": model}) as conn:

        async def read() -> None:
            try:
                async for event in conn:
                    log.add(event.to_dict())
            except websockets.ConnectionClosed as closed:
                log.add({"type": "closed", "code": closed.rcvd.code if closed.rcvd else None})

        reader = asyncio.create_task(read())
        for payload in chunks(pcm24(audio), 48_000, CHUNK_MS):
            if reader.done():
                break
            await conn.input_audio_buffer.append(audio=payload)
            await asyncio.sleep(CHUNK_MS / 1000 / SPEEDUP)
        async with asyncio.timeout(60):
            while not reader.done():
                stopped = log.of("input_audio_buffer.speech_stopped")
                ended = len(log.completed) + len(log.of("conversation.item.input_audio_transcription.failed"))
                if stopped and ended >= len(stopped):
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return log


def transcript_words(log: EventLog) -> list[str]:
    return words(" ".join(event["transcript"] for event in log.completed))


def trigrams(sequence: list[str]) -> Counter[tuple[str, ...]]:
    return Counter(tuple(sequence[i : i + 3]) for i in range(len(sequence) - 2))


def errors_of(log: EventLog) -> list[dict[str, Any]]:
    return [event for event in log.of("error")]


async def test_the_primary_dying_mid_sentence_costs_no_word_and_repeats_none(live: Live) -> None:
    """Every word once, judged against the same session without a failure.

    A fair check has to allow for the recogniser, not the clip's true text: pocketsphinx gets some of these
    words wrong either way. So the reference is the same audio streamed while the primary stays up. The
    failover session must then (1) have as many completed turns, (2) repeat no phrase: no three-word run
    appears more often than in the reference (replaying audio a Final already covered would say a phrase
    twice), and (3) lose no phrase: at most SWITCH_JITTER_WORDS words differ in all (a phrase lost at the
    switch is three or more). The failure must really come mid-sentence and really be survived: the fake saw
    its socket closed with 1011 after half the second sentence, and the last sentence was still transcribed.
    """
    audio, mid_second_s = three_sentences()
    admin = live.admin

    reference_key_id, reference_key = admin.create_key(name="reference", credits_seconds=600)
    reference = await stream_session(live.server, reference_key, audio)
    expected = transcript_words(reference)
    assert not errors_of(reference)
    assert word_errors(words(TRUE_TEXT), expected) <= len(expected) // 2, "the recogniser really listens"

    live.fake.faults.close_1011_after_audio_s = mid_second_s
    try:
        key_id, key = admin.create_key(name="failover", credits_seconds=600)
        failover = await stream_session(live.server, key, audio)
    finally:
        live.fake.faults.reset()
    got = transcript_words(failover)

    dropped = live.fake.live_logs[-1]
    assert dropped.close_code == 1011 and dropped.audio_s >= mid_second_s
    assert "Finalize" in dropped.controls, "the primary finalized phrases before it died"
    assert "failing over" in live.server.log_text()
    assert not errors_of(failover), errors_of(failover)
    assert len(failover.completed) == len(reference.completed)
    repeated = trigrams(got) - trigrams(expected)
    assert not repeated, f"phrases said twice: {repeated}\nreference: {expected}\nfailover:  {got}"
    assert word_errors(expected, got) <= SWITCH_JITTER_WORDS, f"\nreference: {expected}\nfailover:  {got}"
    assert got[-4:] == expected[-4:], "the last sentence, after the switch, was transcribed"

    # Billed once, for the audio the caller sent, whichever provider heard it.
    sent_ms = round(len(audio) / ENGINE_RATE_HZ * 1000)
    for record_key in (reference_key_id, key_id):
        record = await the_record(live.database_url, record_key, timeout_s=15)
        assert record.outcome == "ok"
        assert abs(record.audio_ms - sent_ms) <= CHUNK_MS
        assert record.cost == pytest.approx(0.01 * record.audio_ms / 1000, rel=0.01)


@pytest.fixture(scope="module")
def relayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, FakeOpenAI]]:
    """A server whose OpenAI model (relayed on /v1/realtime) falls back to local pocketsphinx."""
    tmp: Path = tmp_path_factory.mktemp("relay-failover")
    fake = FakeOpenAI("hello from the relayed provider")
    with serving(fake.app) as fake_server:
        catalog = write_catalog(
            tmp / "catalog.yaml",
            {
                "cloud": openai_model(f"{fake_server.base_url}/v1", fallbacks=["local"]),
                "local": {"engine": "pocketsphinx"},
            },
            default_model="cloud",
        )
        env = {"EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN, "EARSHOT_CONFIG": str(catalog), FAKE_KEY_ENV: OPENAI_KEY}
        server = start_server(tmp, env)
        try:
            yield server, fake
        finally:
            stop_server(server)


async def test_a_session_on_a_realtime_provider_with_fallbacks_goes_on_on_the_fallback(
    relayed: tuple[RunningServer, FakeOpenAI],
) -> None:
    server, fake = relayed
    said = trimmed(speech("pocketsphinx-testdata/goforward.wav"))
    gap = silence(1.2)
    audio = np.concatenate([silence(0.5), said, gap, said, gap, said, silence(2.0)])
    _, key = Admin(server).create_key(name="relay-failover", credits_seconds=600)
    fake.faults.close_1011_after_s = 3.0  # during the second utterance at twice real-time pace
    log = await stream_session(server, key, audio, model="cloud")
    assert not errors_of(log) and not log.of("closed"), [*errors_of(log), *log.of("closed")]
    assert len(log.completed) == 3
