"""LiteLLM's proxy for the relay bench: installed into a venv of its own, configured to relay to the fake.

The venv lives in the user's cache (`~/.cache/earshot-bench/litellm-<version>`, or under `$XDG_CACHE_HOME`),
outside the repository and earshot's environment, and is reused by later runs. `litellm[proxy]` is tried
first; a package index that lacks one of that extra's exact pins (`litellm-proxy`, `litellm-proxy-extras`...)
gets `litellm` itself plus the extra's requirements read from its metadata, such pins loosened to the newest
release the index has. Any failure is a `LiteLLMUnavailable` whose message the bench prints as its reason.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
from serving import server_process

LITELLM_VERSION = "1.110.2"
MASTER_KEY = "sk-litellm-bench-master"
INSTALL_TIMEOUT_S = 900
READY_TIMEOUT_S = 120.0
# Printed by the venv's python: the proxy extra's requirements, exact pins loosened (the index may lack them).
_PROXY_REQUIREMENTS = """
import importlib.metadata, re
from packaging.requirements import Requirement
for line in importlib.metadata.requires("litellm") or []:
    req = Requirement(line)
    if req.marker is None or not req.marker.evaluate({"extra": "proxy"}) or req.name == "litellm-proxy":
        continue
    pinned = [spec for spec in req.specifier if spec.operator == "=="]
    print(req.name if pinned else f"{req.name}{req.specifier}")
"""
CONFIG = """
model_list:
  - model_name: whisper-1
    litellm_params:
      model: openai/whisper-1
      api_base: {base_url}/v1
      api_key: {api_key}
    model_info:
      mode: audio_transcription
general_settings:
  master_key: {master_key}
"""


class LiteLLMUnavailable(RuntimeError):
    """LiteLLM's proxy could not be installed or started; the message is the reason to print."""


def venv_dir(version: str = LITELLM_VERSION) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "earshot-bench" / f"litellm-{version}"


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )


def _last_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    return (lines[-1] if lines else result.stderr.strip()[-300:]) or f"exit status {result.returncode}"


def install(version: str = LITELLM_VERSION) -> Path:
    """The `litellm` command of a venv with LiteLLM's proxy installed (installing it on the first call)."""
    root = venv_dir(version)
    command = root / "bin" / "litellm"
    done = root / ".installed"
    if done.exists() and command.exists():
        return command
    python = root / "bin" / "python"
    try:
        if not python.exists():
            # The interpreter behind this one, so the venv does not inherit earshot's packages.
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", str(root)], check=True, capture_output=True, timeout=120)
        print(f"installing litellm[proxy]=={version} into {root} (once) ...", file=sys.stderr, flush=True)
        whole = _pip(python, f"litellm[proxy]=={version}")
        if whole.returncode != 0:
            core = _pip(python, f"litellm=={version}")
            if core.returncode != 0:
                raise LiteLLMUnavailable(f"pip could not install litellm=={version}: {_last_error(core)}")
            listed = subprocess.run(
                [str(python), "-c", _PROXY_REQUIREMENTS], capture_output=True, text=True, check=True
            )
            extra = _pip(python, *listed.stdout.split())
            if extra.returncode != 0:
                raise LiteLLMUnavailable(
                    f"pip could not install litellm's proxy requirements: {_last_error(extra)}"
                )
    except (OSError, subprocess.SubprocessError) as e:
        raise LiteLLMUnavailable(f"could not set up a venv for litellm at {root}: {e}") from e
    if not command.exists():
        raise LiteLLMUnavailable(f"{command} is missing after the install")
    done.touch()
    return command


def write_config(path: Path, fake_url: str, api_key: str) -> Path:
    """A proxy config whose one model relays transcriptions to the fake upstream."""
    path.write_text(CONFIG.format(base_url=fake_url, api_key=api_key, master_key=MASTER_KEY))
    return path


def proxy_command(litellm: Path, config: Path, port: int, workers: int) -> list[str]:
    """The proxy as a user starts it: its own CLI (uvicorn underneath), `workers` processes."""
    command = [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    return [*command, "--num_workers", str(workers)]


def proxy_env() -> dict[str, str]:
    """Quiet logs, the model cost map from the package (not fetched from the internet), no telemetry."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("EARSHOT_")}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False")
    env.pop("PYTHONPATH", None)
    return env


@contextlib.contextmanager
def litellm_server(config: Path, log: IO[bytes], workers: int = 1) -> Iterator[tuple[str, int]]:
    """The proxy with this config on a free port, ready; (its base URL, its pid). Stopped on exit."""
    litellm = install()
    command = lambda port: proxy_command(litellm, config, port, workers)  # noqa: E731
    with server_process(command, log, proxy_env()) as (base_url, process):
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=base_url, timeout=5) as client:
            while True:
                if process.poll() is not None:
                    status = process.returncode
                    raise LiteLLMUnavailable(f"litellm exited with status {status} before it served")
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/health/liveliness").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    waited = f"{READY_TIMEOUT_S:g} s"
                    raise LiteLLMUnavailable(f"litellm did not answer /health/liveliness in {waited}")
                time.sleep(0.2)
        yield base_url, process.pid
