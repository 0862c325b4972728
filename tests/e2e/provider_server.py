"""An earshot server whose catalog routes to the fake OpenAI/Azure provider, for the provider e2e tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ADMIN_TOKEN, RunningServer, sqlite_url, start_server, stop_server
from tests.fakes.openai import AZURE_DEPLOYMENT, AZURE_KEY, OPENAI_KEY, FakeOpenAI
from tests.fakes.server import FakeServer, serving

TRANSCRIPT = "relayed words from the provider"
# Distinctive names for earshot's upstream credentials, so a leak would be easy to spot.
UPSTREAM_KEY_ENV = "EARSHOT_TEST_UPSTREAM_OPENAI_KEY"
CATALOG = """
default_model: relayed
models:
  relayed:
    engine: openai
    base_url: {base}/v1
    api_key_env: {openai_env}
    upstream_model: gpt-4o-transcribe
  relayed-beta:
    engine: openai
    base_url: {base}/v1
    api_key_env: {openai_env}
    upstream_model: gpt-4o-mini-transcribe
    options: {{realtime_dialect: beta}}
  azure:
    engine: azure_openai
    base_url: {base}
    api_key_env: EARSHOT_TEST_UPSTREAM_AZURE_KEY
    options: {{deployment: {deployment}}}
  wrong-key:
    engine: openai
    base_url: {base}/v1
    api_key_env: EARSHOT_TEST_UPSTREAM_WRONG_KEY
  blank:
    engine: "null"
  compatible:
    engine: openai_compatible
    base_url: {base}/compat/v1
    api_key_env: {openai_env}
    upstream_model: whisper-large-v3
"""


@dataclass
class ProviderSetup:
    """The fake provider, its server, and an earshot server routed to it."""

    fake: FakeOpenAI
    fake_server: FakeServer
    server: RunningServer
    database_url: str


@contextmanager
def provider_setup(tmp: Path, **env: str) -> Iterator[ProviderSetup]:
    """Start the fake and an earshot server (SQLite, admin token) whose catalog points at it."""
    fake = FakeOpenAI(TRANSCRIPT)
    with serving(fake.app) as fake_server:
        config = tmp / "earshot.yaml"
        config.write_text(
            CATALOG.format(
                base=fake_server.base_url, openai_env=UPSTREAM_KEY_ENV, deployment=AZURE_DEPLOYMENT
            )
        )
        server_env = {
            "EARSHOT_CONFIG": str(config),
            "EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN,
            UPSTREAM_KEY_ENV: OPENAI_KEY,
            "EARSHOT_TEST_UPSTREAM_AZURE_KEY": AZURE_KEY,
            "EARSHOT_TEST_UPSTREAM_WRONG_KEY": "sk-wrong-upstream-key-4c1d",
            **env,
        }
        server = start_server(tmp, server_env)
        try:
            yield ProviderSetup(fake, fake_server, server, sqlite_url(tmp))
        finally:
            stop_server(server)


def reset(fake: FakeOpenAI) -> None:
    """Forget what the fake saw and clear its faults."""
    fake.faults.reset()
    fake.requests.clear()
    fake.sockets.clear()
    fake.speech_requests.clear()
