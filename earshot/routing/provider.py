"""A provider as the router sees it: one catalog model's engine behind its breaker and gate."""

from __future__ import annotations

from dataclasses import dataclass

from earshot.engines.base import Engine, UpstreamError
from earshot.routing.breaker import CircuitBreaker
from earshot.routing.gate import ConcurrencyGate


@dataclass(slots=True)
class Provider:
    """One catalog model's engine with its own circuit breaker and concurrency gate."""

    model_id: str
    engine: Engine
    breaker: CircuitBreaker
    gate: ConcurrencyGate
    # What a live stream holds while open (the same gate for providers; unbounded for local engines).
    stream_gate: ConcurrencyGate


def circuit_open_error(provider: Provider, now: float) -> UpstreamError:
    """What a caller is told when a provider's breaker refuses calls."""
    return breaker_refusal(f"model {provider.model_id!r}", provider.breaker, now)


def breaker_refusal(what: str, breaker: CircuitBreaker, now: float) -> UpstreamError:
    """What a caller is told when the breaker of `what` (say "chat model 'gpt-4o'") refuses calls."""
    return UpstreamError(
        f"{what} is unavailable after repeated upstream failures",
        transient=True,
        status=503,
        retry_after_s=breaker.retry_after_s(now),
    )
