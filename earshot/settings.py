"""Settings: the only place earshot reads the environment (EARSHOT_*) and the model catalog file."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def cpu_count() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Settings(BaseSettings):
    """Server settings; each field can be set by an EARSHOT_<NAME> environment variable."""

    model_config = SettingsConfigDict(env_prefix="EARSHOT_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int | None = Field(
        default=None,
        ge=1,
        description="Gateway processes sharing the port; unset: one per core with Redis, 1 without",
    )
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1"],
        description="Proxies whose X-Forwarded-For is believed (comma-separated; * for any; empty: none)",
    )
    config: Path | None = Field(default=None, description="Model catalog YAML file")
    max_audio_seconds: float = Field(default=3600.0, gt=0)
    engine_workers: int = Field(default_factory=cpu_count, ge=1, description="Engine worker processes")
    max_worker_rss_mb: int = Field(
        default=4096, ge=0, description="An engine worker past this is replaced between jobs (0: never)"
    )
    decode_concurrency: int = Field(default_factory=cpu_count, ge=1, description="Concurrent audio decodes")
    log_level: str = "info"
    ws_max_message_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest WebSocket message; bigger ones close with 1009"
    )
    ws_ping_interval_s: float = Field(
        default=20.0,
        ge=0,
        le=3600,
        description="How often the server pings each WebSocket client to find dead peers (0: never)",
    )
    ws_ping_timeout_s: float = Field(
        default=20.0, gt=0, le=3600, description="How long a ping may go unanswered before the socket closes"
    )
    ws_auth_timeout_s: float = Field(
        default=10.0, gt=0, description="How long /ws/transcribe waits for its first (auth) message"
    )
    flush_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="How long an ending live session waits for the engine's last text before it goes without",
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="How long a client may take to send a request's headers"
    )
    body_idle_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="The longest pause in a request body before 408"
    )
    upload_deadline_s: float = Field(
        default=120.0, gt=0, le=3600, description="The longest a request body may take in all before 408"
    )
    shutdown_grace_s: float = Field(
        default=10.0, gt=0, le=600, description="How long SIGTERM lets live sessions finish before exit"
    )

    database_url: str = Field(default="sqlite+aiosqlite:///earshot.db", description="SQLAlchemy async URL")
    redis_url: str | None = Field(default=None, description="Redis for shared limits and revocation")
    redis_prefix: str = Field(default="earshot", description="Prefix of every Redis key earshot writes")
    admin_token: SecretStr | None = Field(default=None, description="Bearer token of the /admin API")
    allow_anonymous: bool = Field(default=False, description="Serve without keys on a non-loopback bind")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS (comma-separated; * for any)"
    )
    listen_url_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts POST /v1/listen may fetch a url's audio from (comma-separated); none: refused",
    )

    # Defaults of the runtime dials (see earshot.dials): changeable later without a restart.
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    default_rpm: int = Field(default=0, ge=0)
    default_max_sessions: int = Field(default=0, ge=0)
    ip_rpm: int = Field(default=0, ge=0)
    keepalive_s: float = Field(default=10.0, gt=0)
    max_session_s: float = Field(default=3600.0, gt=0)
    credits_low_seconds: float = Field(default=60.0, ge=0)
    sse_keepalive_s: float = Field(default=15.0, ge=0)
    transcript_queue_wait_s: float = Field(default=3600.0, ge=0)
    push_to_talk_max_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    push_to_talk_ip_rpm: int = Field(default=30, ge=0)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return [address.strip() for address in value.split(",") if address.strip()]
        return value

    @field_validator("listen_url_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [host.strip().lower() for host in value.split(",") if host.strip()]
        return value

    @property
    def binds_loopback(self) -> bool:
        """Whether the server only listens on this machine."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
