"""POST /v1/audio/transcriptions through earshot to OpenAI, Azure and OpenAI-compatible models (the fake).

The official openai SDK is the client; what it gets back is the provider's text, and a provider's failure is
a generic error that names no upstream key, URL or error body.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI

from tests.conftest import Admin, shared_audio
from tests.e2e.provider_server import TRANSCRIPT, ProviderSetup, provider_setup, reset
from tests.fakes.openai import AZURE_KEY, OPENAI_KEY, SECRET_MARKER

GOFORWARD = "pocketsphinx-testdata/goforward.wav"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderSetup]:
    with provider_setup(tmp_path_factory.mktemp("providers")) as running:
        yield running


@pytest.fixture(scope="module")
def earshot_key(setup: ProviderSetup) -> str:
    return Admin(setup.server).create_key()[1]


@pytest.fixture
def client(setup: ProviderSetup, earshot_key: str) -> OpenAI:
    reset(setup.fake)
    return OpenAI(base_url=f"{setup.server.base_url}/v1", api_key=earshot_key, max_retries=0)


def clip() -> bytes:
    return shared_audio(GOFORWARD).read_bytes()


def assert_no_secrets(text: str, setup: ProviderSetup) -> None:
    for secret in (OPENAI_KEY, AZURE_KEY, "sk-wrong-upstream-key", SECRET_MARKER, setup.fake_server.base_url):
        assert secret not in text


@pytest.mark.parametrize("model", ["relayed", "azure", "compatible"])
def test_each_provider_model_transcribes(
    client: OpenAI, setup: ProviderSetup, model: str, earshot_key: str
) -> None:
    result = client.audio.transcriptions.create(model=model, file=("goforward.wav", clip()))
    assert result.text == TRANSCRIPT
    assert earshot_key not in setup.fake.all_headers_text(), "the caller's key never goes upstream"


def test_word_timestamps_come_from_the_provider(client: OpenAI, setup: ProviderSetup) -> None:
    result = client.audio.transcriptions.create(
        model="relayed",
        file=("goforward.wav", clip()),
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert [word.word for word in result.words or []] == TRANSCRIPT.split()
    assert result.duration == pytest.approx(2.5, abs=0.3)
    sent = setup.fake.requests[-1]
    assert (
        sent.fields["model"] == ["gpt-4o-transcribe"] and "word" in sent.fields["timestamp_granularities[]"]
    )


def test_streamed_text_comes_from_the_provider(client: OpenAI) -> None:
    stream = client.audio.transcriptions.create(model="relayed", file=("goforward.wav", clip()), stream=True)
    events = list(stream)
    assert events[-1].type == "transcript.text.done" and events[-1].text == TRANSCRIPT


def test_a_provider_refusing_earshots_key_is_a_generic_error(client: OpenAI, setup: ProviderSetup) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model="wrong-key", file=("goforward.wav", clip()))
    error = caught.value
    assert error.status_code == 502
    body = error.response.text
    assert "ref " in body
    assert_no_secrets(body, setup)
    assert_no_secrets(setup.server.log_text(), setup)


def test_a_provider_failing_is_a_generic_error(client: OpenAI, setup: ProviderSetup) -> None:
    setup.fake.faults.fail_next(status=500, times=5)
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model="azure", file=("goforward.wav", clip()))
    assert caught.value.status_code >= 500
    assert_no_secrets(caught.value.response.text, setup)
    assert_no_secrets(setup.server.log_text(), setup)
