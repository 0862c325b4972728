"""Catalog YAMLs for e2e tests whose models point at fake providers, and small audio to send them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.provider_io import wav_bytes

FAKE_KEY_ENV = "EARSHOT_TEST_FAKE_OPENAI_KEY"


def openai_model(base_url: str, **fields: Any) -> dict[str, Any]:
    """A catalog entry served by an OpenAI-speaking upstream at `base_url` (which ends in /v1)."""
    return {
        "engine": "openai",
        "base_url": base_url,
        "api_key_env": FAKE_KEY_ENV,
        "upstream_model": "whisper-1",
        "options": {"language": "en"},
        **fields,
    }


def write_catalog(path: Path, models: dict[str, dict[str, Any]], default_model: str | None = None) -> Path:
    """Write a catalog file with these models and return its path."""
    catalog: dict[str, Any] = {"models": models}
    if default_model is not None:
        catalog["default_model"] = default_model
    path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    return path


def tone_wav(seconds: float = 1.0) -> bytes:
    """A 16 kHz WAV of a soft 440 Hz tone: audio that decodes, for upstreams that don't listen to it."""
    t = np.arange(int(seconds * ENGINE_RATE_HZ)) / ENGINE_RATE_HZ
    return wav_bytes(Audio((np.sin(2 * np.pi * 440 * t) * 0.09).astype(np.float32)))
