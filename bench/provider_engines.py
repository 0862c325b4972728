"""Provider engine overheads against the fake providers: Sarvam's long-file split, WhisperLiveKit's pacing.

Run as `.venv/bin/python bench/provider_engines.py` (about 30 s). It prints a table and never asserts.

- Sarvam: the VAD pass that finds the pauses of a 60 s file, and the wall time of the whole request when each
  upstream request takes 0.5 s, one piece at a time and with the pieces in parallel.
- WhisperLiveKit: one-shot audio is streamed at the pace the server's progress allows (the fake processes at
  real-time pace from a bounded queue), so the interesting figure is wall time per second of audio.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from earshot.audio.decode import decode_audio  # noqa: E402
from earshot.audio.pcm import Audio  # noqa: E402
from earshot.engines import sarvam, whisperlivekit  # noqa: E402
from earshot.engines.base import TranscribeOptions, transcribe  # noqa: E402
from earshot.engines.sarvam_pieces import pieces_at_pauses, speech_probabilities  # noqa: E402
from earshot.engines.spec import ModelSpec  # noqa: E402
from tests.fakes.sarvam import SarvamFake  # noqa: E402
from tests.fakes.server import serving  # noqa: E402
from tests.fakes.whisperlivekit import WhisperLiveKitFake  # noqa: E402

AUDIO = REPO.parent / "shared" / "audio"
LONG = AUDIO / "negative" / "silero_vad_test.wav"
CLIP = AUDIO / "pocketsphinx-testdata" / "librivox" / "sense_and_sensibility_01_austen_64kb-0870.wav"


def row(name: str, value: str) -> None:
    print(f"| {name:<62} | {value:>18} |")


async def sarvam_figures(audio: Audio) -> None:
    started = time.perf_counter()
    probabilities = speech_probabilities(audio)
    vad_s = time.perf_counter() - started
    pieces = pieces_at_pauses(probabilities, audio.duration_s, 29.0)
    row(f"sarvam: VAD over {audio.duration_s:.0f} s of audio (first call loads the model)", f"{vad_s:.2f} s")
    row("sarvam: pieces (seconds each)", " ".join(f"{e - s:.1f}" for s, e in pieces))
    fake = SarvamFake(api_key="bench-key")
    fake.faults.delay_s = 0.5
    os.environ["BENCH_SARVAM_KEY"] = "bench-key"
    with serving(fake.app) as server:
        for parallel in (1, 4):
            spec = ModelSpec(
                engine="sarvam",
                base_url=server.base_url,
                api_key_env="BENCH_SARVAM_KEY",
                options={"max_parallel": parallel},
            )
            engine = sarvam.build("sarvam", spec, pool=None)  # type: ignore[arg-type]
            await engine.start()
            started = time.perf_counter()
            await transcribe(engine, audio, TranscribeOptions())
            row(
                f"sarvam: whole file, 0.5 s per request, max_parallel={parallel}",
                f"{time.perf_counter() - started:.2f} s",
            )
            await engine.stop()


async def whisperlivekit_figures(audio: Audio) -> None:
    fake = WhisperLiveKitFake(max_queue_s=4.0)
    with serving(fake.app) as server:
        for lead_s in (0.5, 2.0):
            spec = ModelSpec(
                engine="whisperlivekit", base_url=server.base_url, options={"max_lead_s": lead_s}
            )
            engine = whisperlivekit.build("wlk", spec, pool=None)  # type: ignore[arg-type]
            started = time.perf_counter()
            await transcribe(engine, audio, TranscribeOptions())
            wall_s = time.perf_counter() - started
            queued = fake.connections[-1].most_queued_s
            row(
                f"wlk: one-shot {audio.duration_s:.1f} s, max_lead_s={lead_s} (most queued {queued:.2f} s)",
                f"{wall_s / audio.duration_s:.2f} s/s",
            )


async def main() -> None:
    print(f"| {'figure':<62} | {'value':>18} |")
    print(f"|{'-' * 64}|{'-' * 20}|")
    await sarvam_figures(decode_audio(LONG.read_bytes()))
    await whisperlivekit_figures(decode_audio(CLIP.read_bytes()))


if __name__ == "__main__":
    asyncio.run(main())
