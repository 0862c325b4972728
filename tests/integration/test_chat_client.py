"""The chat client against the fake chat server on a real socket: streamed text, tool calls put together from
their pieces, token usage, fallback on failures, and no upstream detail in what the caller gets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from earshot.engines.base import UpstreamError
from earshot.routing.catalog import Catalog, CatalogError, ChatModelSpec
from earshot.voice.chat import ChatModels
from earshot.voice.chat_wire import ChatEvent, Finished, TextDelta, ToolCall, Usage
from tests.fakes.chat import AZURE_CHAT_KEY, CHAT_KEY, SECRET_MARKER, FakeChat, Reply, ScriptedCall
from tests.fakes.server import FakeServer, serving

KEY_ENV = "EARSHOT_TEST_CHAT_KEY"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeChat, FakeServer, FakeChat, FakeServer]]:
    primary, backup = FakeChat(), FakeChat()
    with serving(primary.app) as primary_server, serving(backup.app) as backup_server:
        yield primary, primary_server, backup, backup_server


@pytest.fixture
def chat(
    fakes: tuple[FakeChat, FakeServer, FakeChat, FakeServer], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FakeChat, FakeChat, Catalog]]:
    primary, primary_server, backup, backup_server = fakes
    primary.reset()
    backup.reset()
    monkeypatch.setenv(KEY_ENV, CHAT_KEY)
    common: dict[str, Any] = {
        "engine": "openai_compatible",
        "api_key_env": KEY_ENV,
        "upstream_model": "gpt-x",
    }
    catalog = Catalog.embedded()
    catalog.chat_models = {
        "helper": ChatModelSpec(base_url=f"{primary_server.base_url}/v1", fallbacks=("backup",), **common),
        "backup": ChatModelSpec(base_url=f"{backup_server.base_url}/v1", **common),
        "alone": ChatModelSpec(base_url=f"{primary_server.base_url}/v1", **common),
    }
    catalog.default_chat_model = "helper"
    yield primary, backup, catalog


async def collect(
    models: ChatModels, model: str | None, tools: list[dict[str, Any]] | None = None
) -> list[ChatEvent]:
    try:
        return [event async for event in models.route(model).client.stream(HELLO, tools or [])]
    finally:
        await models.aclose()


async def test_text_streams_in_pieces_with_usage_last(chat: tuple[FakeChat, FakeChat, Catalog]) -> None:
    primary, _, catalog = chat
    primary.script(Reply(text="It is sunny in Lisbon.", prompt_tokens=30, completion_tokens=6))
    events = await collect(ChatModels(catalog), None)
    texts = [event.text for event in events if isinstance(event, TextDelta)]
    assert len(texts) == 5 and "".join(texts) == "It is sunny in Lisbon."
    assert events[-2:] == [Finished("stop"), Usage(30, 6)]
    sent = primary.requests[-1]
    assert sent["model"] == "gpt-x" and sent["stream"] is True and sent["stream_options"]["include_usage"]


async def test_a_tool_call_split_across_chunks_comes_out_whole(
    chat: tuple[FakeChat, FakeChat, Catalog],
) -> None:
    primary, _, catalog = chat
    call = ScriptedCall("weather", {"city": "Lisbon", "unit": "celsius"}, pieces=5)
    primary.script(Reply(calls=(call,)))
    events = await collect(ChatModels(catalog), "helper", [WEATHER_TOOL])
    calls = [event for event in events if isinstance(event, ToolCall)]
    assert calls == [ToolCall(call.call_id, "weather", json.dumps(call.arguments))]
    assert Finished("tool_calls") in events
    assert primary.requests[-1]["tools"] == [WEATHER_TOOL]


@pytest.mark.parametrize("failure", [Reply(status=500), Reply(text="cut short", drop_after_chunks=1)])
async def test_a_failing_primary_falls_back_before_anything_reached_the_caller(
    chat: tuple[FakeChat, FakeChat, Catalog], failure: Reply
) -> None:
    primary, backup, catalog = chat
    primary.script(failure)
    backup.script(Reply(text="from the backup"))
    events = await collect(ChatModels(catalog), "helper")
    assert "".join(event.text for event in events if isinstance(event, TextDelta)) == "from the backup"


async def test_a_stream_cut_after_text_reached_the_caller_fails_without_repeating_it(
    chat: tuple[FakeChat, FakeChat, Catalog],
) -> None:
    primary, backup, catalog = chat
    primary.script(Reply(text="cut short here", drop_after_chunks=3))
    models = ChatModels(catalog)
    texts: list[str] = []
    with pytest.raises(UpstreamError, match=r"stopped mid-reply|unreachable"):
        async for event in models.route("helper").client.stream(HELLO, []):
            if isinstance(event, TextDelta):
                texts.append(event.text)
    await models.aclose()
    assert texts == ["cut", " short"]
    assert backup.requests == []


async def test_a_failure_without_fallback_is_generic(chat: tuple[FakeChat, FakeChat, Catalog]) -> None:
    primary, _, catalog = chat
    primary.script(Reply(status=503))
    with pytest.raises(UpstreamError) as caught:
        await collect(ChatModels(catalog), "alone")
    assert caught.value.transient
    assert SECRET_MARKER not in str(caught.value) and CHAT_KEY not in str(caught.value)
    assert "127.0.0.1" not in str(caught.value)


async def test_azure_openai_names_the_deployment_in_the_url_and_sends_its_key_header(
    fakes: tuple[FakeChat, FakeServer, FakeChat, FakeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    primary, primary_server, _, _ = fakes
    primary.reset()
    monkeypatch.setenv(KEY_ENV, AZURE_CHAT_KEY)
    catalog = Catalog.embedded()
    catalog.chat_models = {
        "azure": ChatModelSpec(
            engine="azure_openai",
            base_url=primary_server.base_url,
            api_key_env=KEY_ENV,
            upstream_model="my-gpt",
        )
    }
    primary.script(Reply(text="from azure"))
    events = await collect(ChatModels(catalog), "azure")
    assert "".join(event.text for event in events if isinstance(event, TextDelta)) == "from azure"
    assert "model" not in primary.requests[-1]
    assert primary.headers[-1]["api-key"] == AZURE_CHAT_KEY and "authorization" not in primary.headers[-1]


async def test_a_missing_key_variable_is_a_catalog_error(
    chat: tuple[FakeChat, FakeChat, Catalog], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, catalog = chat
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(CatalogError, match=KEY_ENV):
        ChatModels(catalog)
