"""LiteLLM's proxy for the benches that compare with it: installed into a venv of its own, run on a free port.

The venv lives outside the repo (~/.cache/earshot-bench/litellm-VERSION, or $EARSHOT_BENCH_CACHE) and is made
once with `pip install litellm[proxy]==VERSION` from the configured index; earshot's own environment never
sees LiteLLM. A bench that cannot install or start it gets LiteLLMUnavailable with the reason, and leaves its
LiteLLM column out.
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
INSTALL_TIMEOUT_S = 900
READY_TIMEOUT_S = 120.0


class LiteLLMUnavailable(RuntimeError):
    """LiteLLM's proxy could not be installed or started; the message says why."""


def litellm_venv(version: str = LITELLM_VERSION) -> Path:
    """The venv holding `litellm[proxy]==version`, made (once) if missing."""
    cache = Path(os.environ.get("EARSHOT_BENCH_CACHE") or Path.home() / ".cache" / "earshot-bench")
    venv = cache / f"litellm-{version}"
    if (venv / "bin" / "litellm").exists():
        return venv
    print(f"  installing litellm[proxy]=={version} into {venv} (once)", file=sys.stderr, flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", f"litellm[proxy]=={version}"],
            check=True,
            capture_output=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except subprocess.CalledProcessError as e:
        tail = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
        raise LiteLLMUnavailable(
            f"pip could not install litellm[proxy]=={version}: {' / '.join(tail)}"
        ) from e
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LiteLLMUnavailable(f"could not install litellm[proxy]=={version}: {e}") from e
    if not (venv / "bin" / "litellm").exists():
        raise LiteLLMUnavailable(f"litellm[proxy]=={version} installed no `litellm` command")
    return venv


@contextlib.contextmanager
def litellm_server(config: Path, log: IO[bytes], workers: int = 1) -> Iterator[tuple[str, int]]:
    """`litellm --config CONFIG` on a free port, ready; (its base URL, its pid). Stopped on exit."""
    venv = litellm_venv()
    env = {
        **os.environ,
        "LITELLM_LOG": os.environ.get("LITELLM_LOG", "ERROR"),
        # No telemetry or model-cost-map fetches: the bench machine has no internet.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
    }
    env.pop("PYTHONPATH", None)

    def command(port: int) -> list[str]:
        return [
            str(venv / "bin" / "litellm"),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            str(workers),
        ]

    with server_process(command, log, env) as (base_url, process):
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=base_url, timeout=5) as client:
            while True:
                if process.poll() is not None:
                    raise LiteLLMUnavailable(
                        f"litellm exited with status {process.returncode} before it served"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/health/liveliness").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise LiteLLMUnavailable(
                        f"litellm did not answer /health/liveliness in {READY_TIMEOUT_S:g} s"
                    )
                time.sleep(0.2)
        yield base_url, process.pid
