"""What the engine hears through HTTP is what it hears when called directly."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from earshot.audio.decode import decode_audio
from earshot.engines.base import Engine, TranscribeOptions, transcribe
from tests.conftest import ENGLISH_CLIPS, Clip, RunningServer


@pytest.mark.skipif(
    not ENGLISH_CLIPS, reason="../shared/audio is absent (the shared folder sits beside the repo)"
)
async def test_http_text_equals_direct_engine_text_for_every_english_clip(
    server: RunningServer, engine: Engine
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:

        async def through_http(data: bytes, name: str) -> str:
            response = await client.post(
                "/v1/audio/transcriptions", files={"file": (name, data)}, data={"model": "pocketsphinx"}
            )
            assert response.status_code == 200, response.text
            text: str = response.json()["text"]
            return text

        async def direct(data: bytes) -> str:
            audio = await asyncio.to_thread(decode_audio, data)
            return (await transcribe(engine, audio, TranscribeOptions())).text

        async def compare(clip: Clip) -> tuple[str, str, str]:
            async with in_flight:
                data = clip.path.read_bytes()
                via_http, via_engine = await asyncio.gather(through_http(data, clip.path.name), direct(data))
                return clip.path.name, via_http, via_engine

        in_flight = asyncio.Semaphore(4)
        results = await asyncio.gather(*(compare(clip) for clip in ENGLISH_CLIPS))
    assert [r for r in results if r[1] != r[2]] == []
    assert sum(1 for r in results if r[1]) > len(results) / 2, "most clips should produce some text"
