"""`POST /admin/models/{id}/test`: a smoke check per capability, ok with latency or the mapped error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, free_port, start_server, stop_server
from tests.fakes.openai import OPENAI_KEY, SECRET_MARKER, FakeOpenAI
from tests.fakes.server import FakeServer, serving

ADMIN_TOKEN = "admin-token-for-model-checks"
KEY_VARIABLE = "EARSHOT_TEST_CHECKS_OPENAI_KEY"


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeOpenAI, FakeServer]]:
    provider = FakeOpenAI()
    with serving(provider.app) as server:
        yield provider, server


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, fake: tuple[FakeOpenAI, FakeServer]
) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("model-checks")
    _, upstream = fake
    config = Path(tmp) / "earshot.yaml"
    config.write_text(
        f"""
default_model: local
models:
  local:
    engine: pocketsphinx
  cloud:
    engine: openai
    upstream_model: gpt-4o-transcribe
    base_url: {upstream.base_url}/v1
    api_key_env: {KEY_VARIABLE}
  nowhere:
    engine: openai
    base_url: http://127.0.0.1:{free_port()}/v1
    api_key_env: {KEY_VARIABLE}
    capabilities: [transcribe]
    connect_timeout_s: 2
"""
    )
    env = {"EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN, "EARSHOT_CONFIG": str(config), KEY_VARIABLE: OPENAI_KEY}
    running = start_server(tmp, env)
    try:
        yield running
    finally:
        stop_server(running)


def check(server: RunningServer, model: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/admin/models/{model}/test",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=60,
    )


def test_a_local_model_passes_every_capability_check(server: RunningServer) -> None:
    response = check(server, "local")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["model"] == "local" and report["ok"] is True
    assert [c["capability"] for c in report["checks"]] == ["transcribe", "stream", "realtime"]
    assert all(c["ok"] and c["latency_ms"] > 0 for c in report["checks"])


def test_a_cloud_model_is_checked_over_rest_and_its_realtime_socket(
    server: RunningServer, fake: tuple[FakeOpenAI, FakeServer]
) -> None:
    provider, _ = fake
    sockets_before = len(provider.sockets)
    report = check(server, "cloud").json()
    assert report["ok"] is True, report
    assert provider.requests, "the transcribe check reached the provider's REST endpoint"
    assert len(provider.sockets) > sockets_before, "the realtime check opened the provider's socket"


def test_a_failing_provider_reports_the_mapped_error_without_upstream_details(
    server: RunningServer, fake: tuple[FakeOpenAI, FakeServer]
) -> None:
    provider, upstream = fake
    provider.faults.fail_next(status=500)
    report = check(server, "cloud").json()
    transcribe = report["checks"][0]
    assert report["ok"] is False and transcribe["ok"] is False
    assert transcribe["error"]["code"] == "upstream_error"
    unreachable = check(server, "nowhere").json()
    assert unreachable["checks"][0]["error"]["code"] == "upstream_error"
    for text in (str(report), str(unreachable)):
        assert SECRET_MARKER not in text and OPENAI_KEY not in text
        assert upstream.base_url not in text and "127.0.0.1" not in text


def test_checks_need_the_admin_token_and_a_known_model(server: RunningServer) -> None:
    assert httpx.post(f"{server.base_url}/admin/models/local/test", timeout=10).status_code == 401
    missing = check(server, "no-such-model")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
