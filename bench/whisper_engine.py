"""faster-whisper engine benchmark: one-shot real-time factor and the cost of live streaming, per model.

Run as `.venv/bin/python bench/whisper_engine.py [--model DIR_OR_NAME] [--workers N] [--beam-size B]`. Without
`--model` it uses the tiny random-weight model the tests build (which measures earshot's overhead around
faster-whisper, not Whisper's speed). Prints a table and never asserts: RTF is wall seconds per audio second.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from earshot.audio.decode import decode_audio  # noqa: E402
from earshot.audio.pcm import Audio  # noqa: E402
from earshot.engines.base import Engine, TranscribeOptions  # noqa: E402
from earshot.engines.results import Final, Partial  # noqa: E402
from earshot.engines.spec import ModelSpec  # noqa: E402
from earshot.engines.workers import WorkerPool  # noqa: E402
from earshot.routing.router import build_engine  # noqa: E402

CLIPS = (
    "pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0880.wav",
    "pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0890.wav",
    "jfk/jfk.flac",
)
CHUNK_S = 0.1


async def one_shot(engine: Engine, clips: list[Audio], options: TranscribeOptions) -> float:
    started = time.perf_counter()
    for clip in clips:
        async for _ in engine.transcribe_segments(clip, options):
            pass
    return time.perf_counter() - started


async def live(engine: Engine, clip: Audio, interim_results: bool) -> tuple[float, int, int]:
    """Stream a clip at ten times real time (so live RTF is at least 0.1); wall seconds, Partials, Finals."""
    stream = engine.open_stream(TranscribeOptions(interim_results=interim_results))
    started = time.perf_counter()
    t = 0.0
    while t < clip.duration_s:
        await stream.send(clip.slice(t, t + CHUNK_S))
        await asyncio.sleep(0.01)
        t += CHUNK_S
    await stream.close()
    results = [r async for r in stream.results()]
    elapsed = time.perf_counter() - started
    return elapsed, sum(isinstance(r, Partial) for r in results), sum(isinstance(r, Final) for r in results)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="model directory or hub name (default: the tests' tiny model)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--beam-size", type=int, default=1)
    args = parser.parse_args()
    options: dict[str, object] = {"beam_size": args.beam_size}
    if args.model:
        options["model"] = args.model
    else:
        from tests.tiny_whisper import tiny_whisper_model

        options.update(model=str(tiny_whisper_model()), max_new_tokens=8, no_speech_threshold=None)
    audio_dir = REPO.parent / "shared" / "audio"
    clips = [decode_audio((audio_dir / clip).read_bytes()) for clip in CLIPS if (audio_dir / clip).exists()]
    if not clips:
        sys.exit("../shared/audio is absent: no clips to transcribe")
    total_s = sum(clip.duration_s for clip in clips)

    pool = WorkerPool(args.workers)
    engine = build_engine("bench", ModelSpec(engine="faster_whisper", options=options), pool)
    started = time.perf_counter()
    await engine.start()
    load_s = time.perf_counter() - started
    try:
        await one_shot(engine, clips[:1], TranscribeOptions())  # warm caches
        rows = []
        for words in (False, True):
            elapsed = await one_shot(engine, clips, TranscribeOptions(word_timestamps=words))
            rows.append((f"one-shot, words={words}", total_s, elapsed, "", ""))
        longest = max(clips, key=lambda clip: clip.duration_s)
        for interim in (True, False):
            elapsed, partials, finals = await live(engine, longest, interim)
            rows.append((f"live, interim={interim}", longest.duration_s, elapsed, str(partials), str(finals)))
    finally:
        await engine.stop()
        pool.shutdown()

    print(f"model: {options['model']}  workers: {args.workers}  load: {load_s:.2f} s (all workers)")
    print(f"{'case':<26}{'audio s':>9}{'wall s':>9}{'RTF':>8}{'partials':>10}{'finals':>8}")
    for case, audio_s, wall_s, partials, finals in rows:
        print(f"{case:<26}{audio_s:>9.1f}{wall_s:>9.2f}{wall_s / audio_s:>8.3f}{partials:>10}{finals:>8}")


if __name__ == "__main__":
    asyncio.run(main())
