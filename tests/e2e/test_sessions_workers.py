"""Two real servers sharing PostgreSQL and Redis keep one conversation: an approval decided from both at once
has exactly one winner, and a turn running on one worker makes the session busy on the other."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    Admin,
    RunningServer,
    fresh_database,
    shared_store_env,
    start_server,
    stop_server,
    two_workers,
    wait_until,
)
from tests.e2e.sessions_client import SessionsClient, done
from tests.fakes.chat import CHAT_KEY, FakeChat, Reply, ScriptedCall
from tests.fakes.server import serving

CHAT_KEY_ENV = "EARSHOT_TEST_CHAT_KEY"
DECIDERS = 20
TRANSFER = {
    "type": "function",
    "name": "transfer",
    "requires_approval": True,
    "parameters": {"type": "object"},
}


@dataclass
class Pair:
    first: RunningServer
    second: RunningServer
    chat: FakeChat
    tmp: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp: Path = tmp_path_factory.mktemp("session-workers")
    chat = FakeChat()
    with serving(chat.app) as chat_server, fresh_database("postgresql", tmp) as url:
        catalog = tmp / "catalog.yaml"
        catalog.write_text(
            json.dumps(
                {
                    "models": {"null": {"engine": "null"}},
                    "chat_models": {
                        "helper": {
                            "engine": "openai_compatible",
                            "base_url": f"{chat_server.base_url}/v1",
                            "api_key_env": CHAT_KEY_ENV,
                        }
                    },
                }
            )
        )
        env = {**shared_store_env(url), "EARSHOT_CONFIG": str(catalog), CHAT_KEY_ENV: CHAT_KEY}
        with two_workers(tmp, env) as (first, second):
            yield Pair(first, second, chat, tmp, env)


def test_of_twenty_decisions_on_two_workers_exactly_one_wins(pair: Pair) -> None:
    _, key = Admin(pair.first).create_key()
    on_first, on_second = SessionsClient(pair.first.base_url, key), SessionsClient(pair.second.base_url, key)
    session = on_first.create(tools=[TRANSFER])
    pair.chat.script(Reply(calls=(ScriptedCall("transfer", {"amount": 5}),)), Reply(text="Not sent."))
    [request] = [item for item in done(on_first.say(session["id"], "Send 5."))["output"]]
    assert request["type"] == "mcp_approval_request"
    start = threading.Barrier(DECIDERS)

    def decide(index: int) -> httpx.Response:
        worker = on_first if index % 2 else on_second
        start.wait()
        return worker.decide(session["id"], request["id"], index % 3 == 0, f"decider {index}")

    with ThreadPoolExecutor(DECIDERS) as pool:
        answers = list(pool.map(decide, range(DECIDERS)))
    winners = [answer for answer in answers if answer.status_code == 200]
    losers = [answer for answer in answers if answer.status_code != 200]
    assert len(winners) == 1, [answer.status_code for answer in answers]
    assert {answer.status_code for answer in losers} == {409}
    decisions = {json.dumps(answer.json()["decision"], sort_keys=True) for answer in losers}
    assert len(decisions) == 1 and all(a.json()["error"]["code"] == "already_decided" for a in losers)
    stored = on_second.get(session["id"])["items"]
    [stored_request] = [item for item in stored if item["type"] == "mcp_approval_request"]
    assert json.dumps(stored_request["decision"], sort_keys=True) in decisions
    assert [item["type"] for item in stored].count("mcp_approval_response") == 1


def test_a_turn_on_one_worker_makes_the_session_busy_on_the_other(pair: Pair) -> None:
    _, key = Admin(pair.first).create_key()
    on_first, on_second = SessionsClient(pair.first.base_url, key), SessionsClient(pair.second.base_url, key)
    session = on_first.create()
    hold = threading.Event()
    pair.chat.reset()
    pair.chat.script(Reply(text="Slowly now.", hold=hold))
    path = f"/v1/sessions/{session['id']}/messages"
    try:
        with on_first.http.stream("POST", path, json={"content": "first"}) as running:
            assert running.status_code == 200
            wait_until(lambda: len(pair.chat.requests) == 1, 5)
            busy = on_second.http.post(path, json={"content": "second"})
            assert busy.status_code == 409, busy.text
            assert busy.json()["error"]["code"] == "session_busy"
            hold.set()
            running.read()
        answered = on_second.say(session["id"], "third")
        assert done(answered)["status"] == "completed"
    finally:
        hold.set()


def test_a_crashed_workers_turn_lock_expires(pair: Pair) -> None:
    _, key = Admin(pair.first).create_key()
    doomed = start_server(pair.tmp, pair.env)
    on_doomed, on_first = SessionsClient(doomed.base_url, key), SessionsClient(pair.first.base_url, key)
    session = on_first.create()
    hold = threading.Event()
    pair.chat.reset()
    pair.chat.script(Reply(text="Never finished.", hold=hold))
    path = f"/v1/sessions/{session['id']}/messages"
    try:
        with on_doomed.http.stream("POST", path, json={"content": "first"}) as running:
            assert running.status_code == 200
            wait_until(lambda: len(pair.chat.requests) == 1, 5)
            doomed.process.kill()
            doomed.process.wait()
        assert on_first.http.post(path, json={"content": "too soon"}).status_code == 409
        # Nobody renews the dead worker's hold: it lapses, and the session takes turns again.
        wait_until(lambda: on_first.http.post(path, json={"content": "later"}).status_code == 200, 30, 0.5)
    finally:
        hold.set()
        stop_server(doomed)
