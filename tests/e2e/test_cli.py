"""The earshot command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import shared_audio
from tests.fakes.openai import OPENAI_KEY, FakeOpenAI
from tests.fakes.server import serving


def _earshot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "earshot", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_transcribe_prints_text_for_each_file() -> None:
    first = shared_audio("pocketsphinx-testdata/goforward.wav")
    second = shared_audio("speechbrain/spk1_snt1.wav")
    result = _earshot("transcribe", str(first), str(second))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"==> {first} <==",
        "Go forward 10 meters.",
        f"==> {second} <==",
        result.stdout.splitlines()[3],
    ]
    assert "child" in result.stdout.splitlines()[3]


def test_transcribe_formats_srt_and_verbose_json() -> None:
    clip = str(shared_audio("pocketsphinx-testdata/goforward.wav"))
    srt = _earshot("transcribe", "--format", "srt", clip)
    assert srt.stdout.startswith("1\n00:00:00,") and "Go forward 10 meters." in srt.stdout
    verbose = json.loads(_earshot("transcribe", "-f", "verbose_json", clip).stdout)
    assert [word["word"] for word in verbose["words"]] == ["Go", "forward", "10", "meters."]
    [segment] = verbose["segments"]
    # The decoder's own figures: a confident first-temperature decode of speech.
    assert segment["temperature"] == 0.0 and segment["no_speech_prob"] < 0.5
    assert -1.0 < segment["avg_logprob"] < 0 and 0 < segment["compression_ratio"] < 2.4
    pocketsphinx = json.loads(_earshot("transcribe", "-m", "pocketsphinx", "-f", "verbose_json", clip).stdout)
    assert [word["word"] for word in pocketsphinx["words"]] == ["go", "forward", "ten", "meters"]


def test_transcribe_reports_unreadable_audio_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    result = _earshot("transcribe", str(bad))
    assert result.returncode == 1
    assert "could not decode audio" in result.stderr and "Traceback" not in result.stderr


def test_unknown_model_exits_2_with_a_hint() -> None:
    result = _earshot("transcribe", "--model", "nope", str(shared_audio("fsdd/1_george_0.wav")))
    assert result.returncode == 2 and "earshot models" in result.stderr


def test_models_json_lists_whisper_1_as_alias(tmp_path: Path) -> None:
    rows = json.loads(_earshot("models", "--json").stdout)
    assert [row["id"] for row in rows[:2]] == ["whisper-tiny.en", "pocketsphinx"]
    assert {"id": "whisper-1", "alias_of": "whisper-tiny.en"}.items() <= rows[2].items()
    by_id = {row["id"]: row for row in rows}
    assert {"alias_of": "whisper-tiny.en"}.items() <= by_id["gpt-realtime-whisper"].items()
    # Then the synthesis models, with OpenAI's names for the default one.
    assert {"engine": "espeak", "capabilities": ["speech"], "default": True}.items() <= by_id[
        "espeak"
    ].items()
    assert {"id": "gpt-4o-mini-tts", "alias_of": "espeak"}.items() <= rows[-1].items()
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: {}")
    result = _earshot("models", "--config", str(bad))
    assert result.returncode == 2 and "at least one model" in result.stderr


def test_models_lists_chat_models_after_the_speech_models(tmp_path: Path) -> None:
    config = tmp_path / "earshot.yaml"
    config.write_text(
        "chat_models:\n  helper: {engine: openai_compatible, base_url: 'http://127.0.0.1:9/v1'}\n"
        "  spare: {engine: openai}\ndefault_chat_model: spare\n"
    )
    rows = json.loads(_earshot("models", "--config", str(config), "--json").stdout)
    assert rows[-2:] == [
        {
            "id": "helper",
            "alias_of": None,
            "engine": "openai_compatible",
            "capabilities": ["chat"],
            "fallbacks": [],
            "default": False,
        },
        {
            "id": "spare",
            "alias_of": None,
            "engine": "openai",
            "capabilities": ["chat"],
            "fallbacks": [],
            "default": True,
        },
    ]


def test_serve_refuses_a_chat_model_whose_key_variable_is_unset(tmp_path: Path) -> None:
    config = tmp_path / "earshot.yaml"
    config.write_text("chat_models:\n  c: {engine: openai, api_key_env: EARSHOT_TEST_UNSET_CHAT_KEY}\n")
    result = _earshot("serve", "--config", str(config), "--port", "1")
    assert result.returncode == 2
    assert "EARSHOT_TEST_UNSET_CHAT_KEY is not set" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_a_catalog_whose_provider_key_variable_is_unset(tmp_path: Path) -> None:
    config = tmp_path / "earshot.yaml"
    config.write_text(
        "models:\n  cloud:\n    engine: openai\n    api_key_env: EARSHOT_TEST_UNSET_KEY_VARIABLE\n"
    )
    result = _earshot("serve", "--config", str(config), "--port", "1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: model 'cloud': environment variable EARSHOT_TEST_UNSET_KEY_VARIABLE is not set"
    ]


def test_transcribe_starts_a_provider_model_and_prints_its_text(tmp_path: Path) -> None:
    provider = FakeOpenAI("hello from the provider")
    with serving(provider.app) as upstream:
        config = tmp_path / "earshot.yaml"
        config.write_text(
            f"models:\n  cloud:\n    engine: openai\n    base_url: {upstream.base_url}/v1\n"
            "    api_key_env: EARSHOT_TEST_CLI_OPENAI_KEY\n"
        )
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "earshot",
                "transcribe",
                "--config",
                str(config),
                str(shared_audio("pocketsphinx-testdata/goforward.wav")),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "EARSHOT_TEST_CLI_OPENAI_KEY": OPENAI_KEY},
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello from the provider"
