"""GET /v1/usage: audio seconds, chat tokens, requests and cost summed by model, day or key."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from earshot.api.admin import is_admin
from earshot.api.context import Gateway, get_gateway
from earshot.api.openai.errors import OpenAIError
from earshot.store.records import UsageTotal

router = APIRouter()
DEFAULT_WINDOW = timedelta(days=30)
# Instants a usage query may name: usage starts after the epoch, and the window's arithmetic stays in range.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


class BadInstant(ValueError):
    """A usage bound that is not a date or time earshot can query."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def parse_instant(value: str | None, param: str) -> datetime | None:
    """An ISO date, ISO datetime (UTC unless zoned) or unix seconds; None if absent."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        if text.replace(".", "", 1).isdigit():
            parsed = datetime.fromtimestamp(float(text), UTC)
        elif len(text) == 10:
            parsed = datetime.combine(date.fromisoformat(text), time(), UTC)
        else:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            parsed = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError, OSError) as e:
        raise BadInstant(param, f"invalid {param}: {value!r} is not a date or time") from e
    if not EARLIEST <= parsed <= LATEST:
        raise BadInstant(param, f"invalid {param}: {value!r} is outside {EARLIEST.year}-{LATEST.year}")
    return parsed


def usage_window(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """[start, end) from the caller's values: end defaults to now, start to DEFAULT_WINDOW before end."""
    end_at = parse_instant(end, "end") or datetime.now(UTC)
    start_at = parse_instant(start, "start") or max(EARLIEST, end_at - DEFAULT_WINDOW)
    if start_at >= end_at:
        raise BadInstant("start", "start must be before end")
    return start_at, end_at


def total_json(total: UsageTotal) -> dict[str, Any]:
    return {
        "requests": total.requests,
        "audio_seconds": total.audio_ms / 1000,
        "prompt_tokens": total.prompt_tokens,
        "completion_tokens": total.completion_tokens,
        "quantity": round(total.quantity, 6),
        "cost": round(total.cost, 6),
    }


@router.get("/v1/usage")
async def get_usage(
    request: Request,
    gateway: Annotated[Gateway, Depends(get_gateway)],
    start: Annotated[str | None, Query(description="ISO date/time or unix seconds")] = None,
    end: Annotated[str | None, Query(description="ISO date/time or unix seconds")] = None,
    group_by: Annotated[Literal["model", "day", "key"], Query()] = "model",
    key_id: Annotated[str | None, Query(description="admin only: one key's usage")] = None,
) -> dict[str, Any]:
    """Usage in [start, end): a key sees its own, the admin token sees every key's."""
    try:
        start_at, end_at = usage_window(start, end)
    except BadInstant as e:
        raise OpenAIError(400, str(e), code="invalid_value", param=e.param) from e
    scope: dict[str, Any] = {}
    caller: dict[str, Any] | None = None
    if is_admin(request, gateway):
        scope["key_id"] = key_id
    else:
        key = await gateway.identify(request)
        if key is None:
            scope["anonymous"] = True
        else:
            scope["key_id"] = key.id
            fresh = await gateway.accounts.keyring.get(key.id)
            credits = fresh.credits_seconds if fresh is not None else None
            caller = {"id": key.id, "name": key.name, "credits_seconds": credits}
    totals = await gateway.accounts.meter.repository.totals(
        start=start_at, end=end_at, group_by=group_by, **scope
    )
    overall = UsageTotal(
        group=None,
        requests=sum(t.requests for t in totals),
        audio_ms=sum(t.audio_ms for t in totals),
        quantity=sum(t.quantity for t in totals),
        cost=sum(t.cost for t in totals),
        prompt_tokens=sum(t.prompt_tokens for t in totals),
        completion_tokens=sum(t.completion_tokens for t in totals),
    )
    return {
        "object": "usage",
        "start": start_at.isoformat(),
        "end": end_at.isoformat(),
        "group_by": group_by,
        "key": caller,
        "data": [{group_by: total.group, **total_json(total)} for total in totals],
        "total": total_json(overall),
    }
