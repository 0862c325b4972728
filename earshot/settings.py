"""Settings: the only place earshot reads the environment (EARSHOT_*) and the model catalog file."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Settings(BaseSettings):
    """Server settings; each field can be set by an EARSHOT_<NAME> environment variable."""

    model_config = SettingsConfigDict(env_prefix="EARSHOT_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    config: Path | None = Field(default=None, description="Model catalog YAML file")
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    max_audio_seconds: float = Field(default=3600.0, gt=0)
    engine_workers: int = Field(default_factory=_cpu_count, ge=1, description="Engine worker processes")
    decode_concurrency: int = Field(default_factory=_cpu_count, ge=1, description="Concurrent audio decodes")
    log_level: str = "info"
