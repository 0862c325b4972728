"""A real earshot server routing to fake Deepgram, Sarvam and WhisperLiveKit, driven by the openai SDK."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from earshot.audio.decode import decode_audio
from tests.conftest import RunningServer, shared_audio, start_server, stop_server
from tests.e2e.catalogs import write_catalog
from tests.fakes.deepgram import DeepgramFake
from tests.fakes.sarvam import SarvamFake
from tests.fakes.server import serving
from tests.fakes.whisperlivekit import WhisperLiveKitFake

CLIP = "pocketsphinx-testdata/goforward.wav"
TEXT = "go forward ten meters"
DEEPGRAM_KEY = "dg-e2e-key-7f3a9c"
SARVAM_KEY = "sarvam-e2e-key-2b8d41"


@dataclass
class Upstreams:
    server: RunningServer
    deepgram: DeepgramFake
    sarvam: SarvamFake
    whisperlivekit: WhisperLiveKitFake
    fake_urls: list[str]


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstreams]:
    tmp: Path = tmp_path_factory.mktemp("providers")
    duration_s = decode_audio(shared_audio(CLIP).read_bytes()).duration_s
    deepgram = DeepgramFake(api_key=DEEPGRAM_KEY, script=TEXT)
    sarvam = SarvamFake(api_key=SARVAM_KEY, script=TEXT)
    wlk = WhisperLiveKitFake(script=TEXT, seconds_per_word=(duration_s - 0.05) / 4)
    with ExitStack() as stack:
        dg_server = stack.enter_context(serving(deepgram.app))
        sv_server = stack.enter_context(serving(sarvam.app))
        wlk_server = stack.enter_context(serving(wlk.app))
        catalog = write_catalog(
            tmp / "catalog.yaml",
            {
                "dg": {"engine": "deepgram", "base_url": dg_server.base_url, "api_key_env": "E2E_DG_KEY"},
                "dg-wrong-key": {
                    "engine": "deepgram",
                    "base_url": dg_server.base_url,
                    "api_key_env": "E2E_DG_WRONG_KEY",
                },
                "sv": {"engine": "sarvam", "base_url": sv_server.base_url, "api_key_env": "E2E_SV_KEY"},
                "wlk": {"engine": "whisperlivekit", "base_url": wlk_server.base_url},
            },
            default_model="dg",
        )
        env = {
            "EARSHOT_CONFIG": str(catalog),
            "E2E_DG_KEY": DEEPGRAM_KEY,
            "E2E_DG_WRONG_KEY": "not-the-key",
            "E2E_SV_KEY": SARVAM_KEY,
        }
        server = start_server(tmp, env)
        urls = [dg_server.base_url, sv_server.base_url, wlk_server.base_url]
        try:
            yield Upstreams(server, deepgram, sarvam, wlk, urls)
        finally:
            stop_server(server)


def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("model", ["dg", "sv", "wlk"])
def test_each_provider_transcribes_through_the_openai_api(upstreams: Upstreams, model: str) -> None:
    with shared_audio(CLIP).open("rb") as audio:
        result = client(upstreams.server).audio.transcriptions.create(model=model, file=audio)
    assert result.text == TEXT


def test_verbose_json_carries_the_providers_segments(upstreams: Upstreams) -> None:
    with shared_audio(CLIP).open("rb") as audio:
        result = client(upstreams.server).audio.transcriptions.create(
            model="dg", file=audio, response_format="verbose_json", timestamp_granularities=["word"]
        )
    assert [w.word for w in result.words or []] == TEXT.split()
    assert upstreams.deepgram.requests[-1]["authorization"] == f"Token {DEEPGRAM_KEY}"


def test_an_upstream_refusal_reaches_the_caller_without_its_key_url_or_body(upstreams: Upstreams) -> None:
    with shared_audio(CLIP).open("rb") as audio, pytest.raises(openai.APIStatusError) as raised:
        client(upstreams.server).audio.transcriptions.create(model="dg-wrong-key", file=audio)
    error = raised.value
    assert error.status_code == 502
    body = error.response.text
    assert "upstream_error" in body and "ref " in body
    log = upstreams.server.log_text()
    for text in (body, log):
        assert DEEPGRAM_KEY not in text and "not-the-key" not in text and SARVAM_KEY not in text
        assert "Invalid credentials" not in text
        for url in upstreams.fake_urls:
            assert url not in text
