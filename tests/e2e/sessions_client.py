"""A small client of earshot's sessions API for e2e tests: sessions, turns read as SSE events, approvals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from tests.conftest import Admin, RunningServer
from tests.fakes.chat import FakeChat


@dataclass
class Served:
    """A server with chat models (played by the fake), its database and its admin client."""

    server: RunningServer
    database_url: str
    chat: FakeChat
    admin: Admin


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON payloads of a server-sent event stream, checking each event's name matches its `type`."""
    name = None
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            event = json.loads(line[5:])
            assert event["type"] == name, (name, event)
            yield event


class SessionsClient:
    """One key's view of a server's sessions."""

    def __init__(self, base_url: str, key: str | None, key_id: str | None = None) -> None:
        self.key_id = key_id
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=60)

    def create(self, **fields: Any) -> dict[str, Any]:
        response = self.http.post("/v1/sessions", json=fields)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def get(self, session_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/sessions/{session_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def turn(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        """POST a turn (`messages`, `tool_outputs`, `approvals/ID`) and read its events to the end."""
        with self.http.stream("POST", path, json=body) as response:
            assert response.status_code == 200, response.read().decode()
            assert response.headers["content-type"].startswith("text/event-stream")
            return list(sse_events(response.iter_lines()))

    def say(self, session_id: str, content: str) -> list[dict[str, Any]]:
        return self.turn(f"/v1/sessions/{session_id}/messages", {"content": content})

    def answer(self, session_id: str, call_id: str, output: str) -> list[dict[str, Any]]:
        return self.turn(f"/v1/sessions/{session_id}/tool_outputs", {"call_id": call_id, "output": output})

    def decide(
        self, session_id: str, approval_id: str, approve: bool, reason: str | None = None
    ) -> httpx.Response:
        """POST a decision and read the whole answer (SSE for the winner, JSON for a loser)."""
        return self.http.post(
            f"/v1/sessions/{session_id}/approvals/{approval_id}", json={"approve": approve, "reason": reason}
        )


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == kind]


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(event["delta"] for event in of_type(events, "response.output_text.delta"))


def done(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The `response.done` event's response (the last event of a turn)."""
    assert events[-1]["type"] == "response.done", events[-1]
    response: dict[str, Any] = events[-1]["response"]
    return response
