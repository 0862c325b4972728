"""Routing through a real server: fallback per fault type, no retry of rejections, breaker, gate.

The official openai SDK talks to earshot; earshot's catalog points its models at two fake OpenAI upstreams,
a primary (whose faults each test sets) and a backup that always answers. What the caller notices is the text
(the backup's words mean the fallback served the request), the status and code of a refusal, and the one
usage record each request leaves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from earshot.store.records import UsageRecord
from tests.conftest import (
    ADMIN_TOKEN,
    Admin,
    RunningServer,
    free_port,
    sqlite_url,
    start_server,
    stop_server,
    usage_records,
    wait_until,
)
from tests.e2e.catalogs import FAKE_KEY_ENV, openai_model, tone_wav, write_catalog
from tests.fakes.openai import OPENAI_KEY, FakeOpenAI
from tests.fakes.server import serving
from tests.fakes.whisperlivekit import WhisperLiveKitFake

PRIMARY_TEXT = "hello from the primary provider"
BACKUP_TEXT = "hello from the backup provider"
PRICE_PER_S = 0.01
BREAKER_RESET_S = 1.0
GATE_DELAY_S = 1.5
AUDIO = tone_wav(1.0)


@dataclass
class Routed:
    """A server whose models route to the primary fake with the backup fake as fallback."""

    server: RunningServer
    database_url: str
    primary: FakeOpenAI
    backup: FakeOpenAI
    streamed: WhisperLiveKitFake
    admin: Admin


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routed]:
    tmp: Path = tmp_path_factory.mktemp("routing")
    primary, backup = FakeOpenAI(PRIMARY_TEXT), FakeOpenAI(BACKUP_TEXT)
    streamed = WhisperLiveKitFake(PRIMARY_TEXT)
    with (
        serving(primary.app) as primary_server,
        serving(backup.app) as backup_server,
        serving(streamed.app) as streamed_server,
    ):
        to_primary = f"{primary_server.base_url}/v1"
        with_fallback = {"fallbacks": ["backup"], "price": PRICE_PER_S}
        catalog = write_catalog(
            tmp / "catalog.yaml",
            {
                "backup": openai_model(f"{backup_server.base_url}/v1", price=PRICE_PER_S),
                # Nobody listens on this port: every call is a connect error.
                "closed-port": openai_model(f"http://127.0.0.1:{free_port()}/v1", **with_fallback),
                "slow": openai_model(to_primary, timeout_s=0.5, **with_fallback),
                "rate-limited": openai_model(to_primary, **with_fallback),
                "failing": openai_model(to_primary, **with_fallback),
                "rejecting": openai_model(to_primary, **with_fallback),
                "breaker": openai_model(to_primary, circuit_failures=2, circuit_reset_s=BREAKER_RESET_S),
                "breaker-with-fallback": openai_model(
                    to_primary, circuit_failures=2, circuit_reset_s=60, **with_fallback
                ),
                "narrow": openai_model(to_primary, max_concurrency=1, max_queue=1),
                # One-shot audio is streamed through this upstream's socket (WhisperLiveKit's /asr).
                "streamed": {
                    "engine": "whisperlivekit",
                    "base_url": streamed_server.base_url,
                    **with_fallback,
                },
            },
            default_model="backup",
        )
        env = {"EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN, "EARSHOT_CONFIG": str(catalog), FAKE_KEY_ENV: OPENAI_KEY}
        server = start_server(tmp, env)
        try:
            yield Routed(server, sqlite_url(tmp), primary, backup, streamed, Admin(server))
        finally:
            stop_server(server)


@pytest.fixture(autouse=True)
def no_faults(routed: Routed) -> Iterator[None]:
    """Each test starts and ends with a healthy primary."""
    routed.primary.faults.reset()
    yield
    routed.primary.faults.reset()
    routed.streamed.faults.reset()


def client(routed: Routed) -> tuple[str, OpenAI]:
    """A new key's id and an SDK client using it (no SDK retries: the test sees each answer)."""
    key_id, key = routed.admin.create_key(name="routing", credits_seconds=1000)
    return key_id, OpenAI(base_url=f"{routed.server.base_url}/v1", api_key=key, max_retries=0, timeout=30)


def transcribe(sdk: OpenAI, model: str) -> str:
    return sdk.audio.transcriptions.create(model=model, file=("clip.wav", AUDIO, "audio/wav")).text


def refusal(sdk: OpenAI, model: str) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        transcribe(sdk, model)
    return caught.value


def records(routed: Routed, key_id: str, expected: int) -> list[UsageRecord]:
    """The key's usage records once `expected` are written (and no more than that)."""

    def mine() -> list[UsageRecord]:
        return [r for r in usage_records(routed.database_url) if r.key_id == key_id]

    wait_until(lambda: len(mine()) >= expected, 10, 0.1)
    found = mine()
    assert len(found) == expected, found
    return found


def assert_billed_once(record: UsageRecord, model: str) -> None:
    assert record.outcome == "ok"
    assert record.model == model
    assert record.audio_ms == 1000
    assert record.cost == pytest.approx(PRICE_PER_S * 1.0)


@pytest.mark.parametrize(
    ("model", "fault"),
    [
        pytest.param("closed-port", None, id="connect-error"),
        pytest.param("slow", "delay", id="timeout"),
        pytest.param("rate-limited", 429, id="429"),
        pytest.param("failing", 500, id="500"),
        pytest.param("failing", 503, id="503"),
        pytest.param("streamed", "close-1011", id="socket-closed-1011"),
    ],
)
def test_a_transient_failure_of_the_primary_is_answered_by_the_fallback(
    routed: Routed, model: str, fault: int | str | None
) -> None:
    if fault == "delay":
        routed.primary.faults.delay_s = 2.0  # above the model's timeout_s of 0.5
    elif fault == "close-1011":
        routed.streamed.faults.close_1011_after_s = 0.3  # mid-upload: WhisperLiveKit takes audio in real time
    elif isinstance(fault, int):
        routed.primary.faults.fail_next(fault)
    primary_calls, backup_calls = len(routed.primary.requests), len(routed.backup.requests)
    key_id, sdk = client(routed)

    assert transcribe(sdk, model) == BACKUP_TEXT

    if fault == "close-1011":
        assert routed.streamed.connections[-1].close_code == 1011
    elif fault is not None:
        assert len(routed.primary.requests) == primary_calls + 1, "the primary was tried once"
    assert len(routed.backup.requests) == backup_calls + 1
    [record] = records(routed, key_id, 1)
    assert_billed_once(record, model)


@pytest.mark.parametrize(
    ("status", "caller_status"),
    [pytest.param(400, 400, id="400"), pytest.param(401, 502, id="401"), pytest.param(404, 400, id="404")],
)
def test_a_rejection_by_the_primary_is_not_retried_on_the_fallback(
    routed: Routed, status: int, caller_status: int
) -> None:
    routed.primary.faults.fail_next(status)
    backup_calls = len(routed.backup.requests)
    key_id, sdk = client(routed)

    error = refusal(sdk, "rejecting")

    assert error.status_code == caller_status
    assert error.code == "upstream_error"
    assert len(routed.backup.requests) == backup_calls, "a rejection is not retried elsewhere"
    [record] = records(routed, key_id, 1)
    assert record.outcome == "upstream_error" and record.cost == 0


def test_the_breaker_opens_after_repeated_failures_then_half_opens_for_one_trial(routed: Routed) -> None:
    key_id, sdk = client(routed)

    def calls() -> int:
        return len(routed.primary.requests)

    # Two consecutive failures (circuit_failures: 2) open the breaker.
    routed.primary.faults.fail_next(500, times=2)
    assert [refusal(sdk, "breaker").status_code for _ in range(2)] == [502, 502]
    seen = calls()

    # Open: refused at once with 503 and Retry-After, and the provider is left alone.
    opened = refusal(sdk, "breaker")
    assert (opened.status_code, opened.code) == (503, "upstream_error")
    assert 1 <= int(opened.response.headers["retry-after"]) <= BREAKER_RESET_S + 1
    assert calls() == seen

    # Half-open after circuit_reset_s: one trial goes through; it fails, so the breaker opens again.
    time.sleep(BREAKER_RESET_S + 0.1)
    routed.primary.faults.fail_next(500)
    assert refusal(sdk, "breaker").status_code == 502
    assert calls() == seen + 1
    assert refusal(sdk, "breaker").status_code == 503
    assert calls() == seen + 1

    # The next trial succeeds and closes the breaker: requests flow again.
    time.sleep(BREAKER_RESET_S + 0.1)
    assert transcribe(sdk, "breaker") == PRIMARY_TEXT
    assert transcribe(sdk, "breaker") == PRIMARY_TEXT
    assert calls() == seen + 3

    outcomes = [record.outcome for record in records(routed, key_id, 7)]
    assert outcomes == ["upstream_error"] * 5 + ["ok", "ok"]


def test_an_open_breaker_sends_requests_straight_to_the_fallback(routed: Routed) -> None:
    key_id, sdk = client(routed)
    routed.primary.faults.fail_next(503, times=2)
    assert [transcribe(sdk, "breaker-with-fallback") for _ in range(2)] == [BACKUP_TEXT] * 2
    seen = len(routed.primary.requests)

    assert transcribe(sdk, "breaker-with-fallback") == BACKUP_TEXT

    assert len(routed.primary.requests) == seen, "the open breaker kept the request off the primary"
    for record in records(routed, key_id, 3):
        assert_billed_once(record, "breaker-with-fallback")


def test_the_concurrency_gate_queues_then_answers_server_busy(routed: Routed) -> None:
    # max_concurrency 1, max_queue 1: one request upstream, one waiting, the third refused at once.
    routed.primary.faults.delay_s = GATE_DELAY_S
    key_id, sdk = client(routed)
    seen = len(routed.primary.requests)
    with ThreadPoolExecutor(2) as pool:
        holding = pool.submit(transcribe, sdk, "narrow")
        wait_until(lambda: len(routed.primary.requests) == seen + 1, 10)
        queued = pool.submit(transcribe, sdk, "narrow")
        time.sleep(0.3)  # the second request is parsed and waiting for the slot

        busy = refusal(sdk, "narrow")
        assert (busy.status_code, busy.code) == (503, "server_busy")
        assert int(busy.response.headers["retry-after"]) >= 1
        assert len(routed.primary.requests) == seen + 1, "the queued request has not gone upstream yet"

        assert holding.result(timeout=30) == PRIMARY_TEXT
        assert queued.result(timeout=30) == PRIMARY_TEXT
    assert len(routed.primary.requests) == seen + 2
    outcomes = sorted(str(record.outcome) for record in records(routed, key_id, 3))
    assert outcomes == ["ok", "ok", "rejected"]


def test_deepgram_prerecorded_answers_provider_failures_and_a_full_gate_in_deepgrams_shape(
    routed: Routed,
) -> None:
    _, key = routed.admin.create_key(name="routing-deepgram", credits_seconds=1000)
    headers = {"Authorization": f"Token {key}", "Content-Type": "audio/wav"}

    def listen(model: str) -> httpx.Response:
        url = f"{routed.server.base_url}/v1/listen?model={model}"
        return httpx.post(url, content=AUDIO, headers=headers, timeout=30)

    routed.primary.faults.fail_next(status=500)
    failed = listen("narrow")
    assert failed.status_code == 502 and failed.json()["err_code"] == "UPSTREAM_ERROR"
    assert "ref" in failed.json()["err_msg"]

    routed.primary.faults.delay_s = GATE_DELAY_S
    seen = len(routed.primary.requests)
    with ThreadPoolExecutor(2) as pool:
        holding = pool.submit(listen, "narrow")
        wait_until(lambda: len(routed.primary.requests) == seen + 1, 10)
        queued = pool.submit(listen, "narrow")
        time.sleep(0.3)
        busy = listen("narrow")
        assert busy.status_code == 429 and busy.json()["err_code"] == "TOO_MANY_REQUESTS"
        assert int(busy.headers["retry-after"]) >= 1
        assert holding.result(timeout=30).status_code == 200
        assert queued.result(timeout=30).status_code == 200
