"""Pipecat's DeepgramSTTService against a real earshot server: its default settings, only the URL changed.

Pipecat asks for interim results and punctuation, and pushes one TranscriptionFrame per `is_final` Result;
an app joins them. They must read as the recording does: one final per stretch of speech, never a lone word.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import float_to_pcm16
from tests.conftest import RunningServer, shared_audio, start_server, stop_server
from tests.e2e.wer import word_errors

pipecat_deepgram = pytest.importorskip(
    "pipecat.services.deepgram.stt", reason="pipecat-ai[deepgram] is not installed (the `clients` extra)"
)
from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

# deepgram-sdk connects with websockets' legacy client, which warns that it is deprecated.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RATE_HZ = 16_000
FRAME_MS = 20  # what a Pipecat transport sends
GAP_S = 0.8
# Four consecutive sentences of one LibriVox reading, as a person would say them, with a pause between.
SENTENCES = [
    f"pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-{number}.wav"
    for number in ("0870", "0890", "0920", "0930")
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """An anonymous server with the default catalog (Whisper tiny.en)."""
    running = start_server(tmp_path_factory.mktemp("pipecat"))
    try:
        yield running
    finally:
        stop_server(running)


def reading(paths: list[Path]) -> bytes:
    """The sentences one after another with a pause between, then two seconds of silence, as PCM16."""
    pieces: list[np.ndarray] = []
    for path in paths:
        pieces += [decode_audio(path.read_bytes()).samples, np.zeros(int(GAP_S * RATE_HZ), np.float32)]
    pieces.append(np.zeros(2 * RATE_HZ, np.float32))
    return float_to_pcm16(np.concatenate(pieces))


def words(text: str) -> list[str]:
    """Lowercase words without punctuation (Whisper writes "ill-disposed" as "ill -disposed")."""
    return re.sub(r"[^\w' ]+", " ", text.lower()).split()


class Transcripts(FrameProcessor):
    """The pipeline's sink: keeps the text of every TranscriptionFrame (finals) and counts the interims."""

    def __init__(self) -> None:
        super().__init__()
        self.finals: list[str] = []
        self.interims = 0
        self.got_final = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            self.finals.append(frame.text)
            self.got_final.set()
        elif isinstance(frame, InterimTranscriptionFrame):
            self.interims += 1
        await self.push_frame(frame, direction)


async def run_pipecat(server: RunningServer, audio: bytes, expected_finals: int) -> Transcripts:
    """Stream `audio` through DeepgramSTTService (defaults, base_url set) and collect what it transcribes."""
    stt = pipecat_deepgram.DeepgramSTTService(api_key="not-checked", base_url=server.base_url)
    sink = Transcripts()
    worker = PipelineWorker(
        Pipeline([stt, sink]),
        params=PipelineParams(audio_in_sample_rate=RATE_HZ),
        idle_timeout_secs=None,
        enable_rtvi=False,
        check_dangling_tasks=False,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    frame_bytes = RATE_HZ * 2 * FRAME_MS // 1000
    for start in range(0, len(audio), frame_bytes):
        chunk = audio[start : start + frame_bytes]
        await worker.queue_frame(InputAudioRawFrame(audio=chunk, sample_rate=RATE_HZ, num_channels=1))
        await asyncio.sleep(FRAME_MS / 1000 / 4)  # four times real time
    # The last sentence's final comes once the server has heard its pause; then the pipeline ends.
    deadline = asyncio.get_running_loop().time() + 60
    while len(sink.finals) < expected_finals and asyncio.get_running_loop().time() < deadline:
        sink.got_final.clear()
        try:
            await asyncio.wait_for(sink.got_final.wait(), 5)
        except TimeoutError:
            break
    await worker.queue_frame(EndFrame())
    await asyncio.wait_for(running, 30)
    return sink


async def test_pipecat_finals_joined_read_as_the_one_shot_transcript(server: RunningServer) -> None:
    audio = reading([shared_audio(path) for path in SENTENCES])
    async with httpx.AsyncClient(timeout=300) as client:
        query = f"encoding=linear16&sample_rate={RATE_HZ}&punctuate=true"
        response = await client.post(f"{server.base_url}/v1/listen?{query}", content=audio)
    one_shot = response.json()["results"]["channels"][0]["alternatives"][0]["transcript"]
    sink = await run_pipecat(server, audio, expected_finals=len(SENTENCES))
    joined = " ".join(sink.finals)
    print(f"\none-shot: {one_shot}\nfinals: {sink.finals}")
    assert sink.interims, "interim results while the audio streams"
    # Each sentence is said in one breath, so each comes as one final, punctuated as the decoder wrote it.
    assert len(sink.finals) == len(SENTENCES), sink.finals
    assert all(len(words(final)) > 1 for final in sink.finals), sink.finals
    assert all(final[:1].isupper() and final.endswith(".") for final in sink.finals), sink.finals
    # The words are the one-shot decode's; a comma may differ (each sentence is decoded on its own), and so
    # may one word of the 60: whether Whisper hears the opening "And" with the live margins varies with the
    # CPU's int8 kernels.
    assert word_errors(words(one_shot), words(joined)) <= 1, (one_shot, joined)
