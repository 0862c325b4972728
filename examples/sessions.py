"""A text conversation through earshot's sessions API: a tool the client runs, and one that needs approval.

    python examples/sessions.py http://127.0.0.1:8000 [API_KEY]

The server needs a chat model in its catalog (`chat_models:`, `default_chat_model:`; docs/configuration.md).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx

TOOLS = [
    {
        "type": "function",
        "name": "weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
    {
        "type": "function",
        "name": "transfer",
        "description": "Send money to a contact",
        "requires_approval": True,
        "parameters": {
            "type": "object",
            "properties": {"amount": {"type": "number"}, "to": {"type": "string"}},
        },
    },
]


def events(http: httpx.Client, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The Realtime-shaped events of one turn."""
    with http.stream("POST", path, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: "):
                yield json.loads(line.removeprefix("data: "))


def run_tool(name: str, arguments: dict[str, Any]) -> str:
    if name == "weather":
        return json.dumps({"city": arguments.get("city"), "sky": "clear", "celsius": 24})
    return json.dumps({"status": "sent", **arguments})


def turn(http: httpx.Client, session_id: str, path: str, body: dict[str, Any]) -> None:
    """Print the assistant's text as it streams; run the calls it asks for; deny what needs approval."""
    while True:
        calls, approvals = [], []
        for event in events(http, f"/v1/sessions/{session_id}/{path}", body):
            if event["type"] == "response.output_text.delta":
                print(event["delta"], end="", flush=True)
            elif event["type"] == "response.function_call_arguments.done":
                calls.append(event)
            elif (
                event["type"] == "response.output_item.done"
                and event["item"]["type"] == "mcp_approval_request"
            ):
                approvals.append(event["item"])
            elif event["type"] == "error":
                print(f"\n[error {event['error']['code']}: {event['error']['message']}]")
        if calls:
            call = calls[0]
            path, body = (
                "tool_outputs",
                {"call_id": call["call_id"], "output": run_tool(call["name"], json.loads(call["arguments"]))},
            )
        elif approvals:
            request = approvals[0]
            print(f"\n[{request['name']}({request['arguments']}) needs approval: denied by this script]")
            path, body = f"approvals/{request['id']}", {"approve": False, "reason": "the script says no"}
        else:
            print()
            return


def main() -> None:
    base_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    headers = {"Authorization": f"Bearer {sys.argv[2]}"} if len(sys.argv) > 2 else {}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        created = http.post("/v1/sessions", json={"instructions": "Be brief.", "tools": TOOLS})
        created.raise_for_status()
        session_id = created.json()["id"]
        for text in ("What is the weather in Lisbon?", "Send 20 euros to Ana."):
            print(f"> {text}")
            turn(http, session_id, "messages", {"content": text})
        http.post(f"/v1/sessions/{session_id}/end").raise_for_status()


if __name__ == "__main__":
    main()
