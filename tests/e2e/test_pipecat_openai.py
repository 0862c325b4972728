"""Pipecat's OpenAIRealtimeSTTService against a real server: its defaults, only the URL changed.

By default the service asks for `gpt-realtime-whisper` with server turn detection off (`turn_detection:
null`) and commits the buffer when the pipeline's own VAD says the user stopped speaking; it takes any `error`
event as fatal. Here a pipeline of Pipecat's Silero VAD and the service hears two sentences.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from earshot.audio.pcm import ENGINE_RATE_HZ, float_to_pcm16
from tests.conftest import RunningServer, one_shot_text, start_server, stop_server
from tests.e2e.realtime_client import silence, speech
from tests.e2e.wer import words

pytest.importorskip(
    "pipecat.services.openai.stt", reason="pipecat-ai[openai] is not installed (the `clients` extra)"
)
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import ErrorFrame, InputAudioRawFrame, TranscriptionFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.services.openai.stt import OpenAIRealtimeSTTService
from pipecat.tests.utils import SleepFrame, run_test

FIRST = "pocketsphinx-testdata/goforward.wav"
SECOND = "pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0880.wav"
FRAME_MS = 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with the default settings and catalog (Whisper tiny.en)."""
    running = start_server(tmp_path_factory.mktemp("pipecat"))
    try:
        yield running
    finally:
        stop_server(running)


def audio_frames(samples: np.ndarray) -> list[InputAudioRawFrame | SleepFrame]:
    """16 kHz PCM16 frames of FRAME_MS, as a transport delivers them, at real-time pace."""
    pcm = float_to_pcm16(samples)
    step = ENGINE_RATE_HZ * FRAME_MS // 1000 * 2
    sent: list[InputAudioRawFrame | SleepFrame] = []
    for at in range(0, len(pcm) - step + 1, step):
        sent.append(InputAudioRawFrame(audio=pcm[at : at + step], sample_rate=ENGINE_RATE_HZ, num_channels=1))
        sent.append(SleepFrame(sleep=FRAME_MS / 1000))
    return sent


async def test_default_service_transcribes_each_turn_as_one_shot_does(server: RunningServer) -> None:
    url = server.base_url.replace("http://", "ws://") + "/v1/realtime"
    stt = OpenAIRealtimeSTTService(api_key="anything", base_url=url)
    pipeline = Pipeline([VADProcessor(vad_analyzer=SileroVADAnalyzer()), stt])
    audio = np.concatenate([silence(0.5), speech(FIRST), silence(1.0), speech(SECOND), silence(1.0)])
    down, up = await run_test(
        pipeline,
        frames_to_send=[*audio_frames(audio), SleepFrame(sleep=8.0)],
        pipeline_params=PipelineParams(audio_in_sample_rate=ENGINE_RATE_HZ),
        start_timeout=10.0,
    )
    errors = [frame for frame in (*down, *up) if isinstance(frame, ErrorFrame)]
    assert errors == [], "the service reported no error"
    finals = [frame.text for frame in down if isinstance(frame, TranscriptionFrame)]
    assert [words(text) for text in finals] == [
        words(one_shot_text(server, FIRST, "gpt-realtime-whisper")),
        words(one_shot_text(server, SECOND, "gpt-realtime-whisper")),
    ]
