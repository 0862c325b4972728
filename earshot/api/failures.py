"""Refusals and failures before any protocol renders them: what went wrong, and what it means to the caller.

The accounts layer raises `AccessDenied`, engines raise `EngineError` and a full model raises `ServerBusy`.
This module decides, once for every protocol, which of earshot's refusal codes each is, the HTTP status it
stands for, and whether waiting helps. OpenAI's error object, Deepgram's `err_code` and the live protocols'
error events are renderings of a `Failure`.
"""

from __future__ import annotations

from dataclasses import dataclass

from earshot.accounts.errors import (
    AccessDenied,
    InsufficientCredits,
    InvalidKey,
    ModelNotAllowed,
    RateLimited,
    ServerDraining,
)
from earshot.engines.base import EngineError, UpstreamError
from earshot.routing.gate import ServerBusy


@dataclass(frozen=True, slots=True)
class Failure:
    """A refusal or failure: earshot's code for it, the HTTP status, and a message safe to show."""

    status: int
    code: str
    message: str
    # Seconds after which trying again may succeed; None when no wait is known to help.
    retry_after_s: int | None = None
    # True when retrying can't help (more credit won't appear by itself), so clients that retry should not.
    final: bool = False


def of_denial(denial: AccessDenied) -> Failure:
    """The failure for a caller the accounts layer refused."""
    message = str(denial)
    if isinstance(denial, InvalidKey):
        return Failure(401, "invalid_api_key", message)
    if isinstance(denial, ModelNotAllowed):
        return Failure(403, "model_not_allowed", message)
    if isinstance(denial, InsufficientCredits):
        return Failure(429, "insufficient_quota", message, final=True)
    if isinstance(denial, ServerDraining):
        return Failure(503, "server_shutting_down", message, retry_after_s=denial.retry_after_s)
    if isinstance(denial, RateLimited):
        code = "concurrency_limit_exceeded" if denial.concurrency else "rate_limit_exceeded"
        return Failure(429, code, message, retry_after_s=denial.retry_after_s)
    return Failure(403, "forbidden", message)


def of_engine(failure: EngineError | ServerBusy) -> Failure:
    """The failure for an engine or provider that failed, or a model too busy to take the work."""
    if isinstance(failure, ServerBusy):
        # The server is full, not the caller over its limits: 503, which clients retry after the hint.
        return Failure(503, "server_busy", str(failure), retry_after_s=max(1, round(failure.retry_after_s)))
    if not isinstance(failure, UpstreamError):
        return Failure(500, "engine_error", f"the engine failed: {failure}")
    status = failure.status or 502
    if not failure.transient and 400 <= status < 500 and status not in (401, 403):
        # The provider refused the request itself (a bad option, say): the caller's request is at fault.
        caller_status = 400
    elif status in (503, 504):
        caller_status = status
    else:
        caller_status = 502
    retry_after_s = None
    if failure.retry_after_s is not None and caller_status == 503:
        retry_after_s = max(1, round(failure.retry_after_s))
    return Failure(caller_status, "upstream_error", str(failure), retry_after_s=retry_after_s)
