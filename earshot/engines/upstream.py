"""Talking to providers safely: one place that turns upstream failures into UpstreamError without leaks.

A provider's error body, URL and key never reach a caller or an INFO log: the caller gets a generic message
with a short reference id, and the details are logged at DEBUG under the same id.
"""

from __future__ import annotations

import logging
import uuid

import httpx

from earshot.engines.base import UpstreamError

log = logging.getLogger(__name__)

# WebSocket close codes for a provider's own trouble (1011 internal error, 1012 restart, 1013 try later,
# 1006 the connection dropped); any other close is the provider refusing what it was sent.
TRANSIENT_CLOSE_CODES = frozenset({1006, 1011, 1012, 1013, 1014})


def reference() -> str:
    """A short id that ties a caller's generic error to the DEBUG log line with the details."""
    return uuid.uuid4().hex[:12]


def is_transient_status(status: int) -> bool:
    """Whether an HTTP status may succeed on another try: 408, 429 and 5xx."""
    return status in (408, 429) or status >= 500


def status_error(provider: str, response: httpx.Response) -> UpstreamError:
    """The UpstreamError for a non-2xx reply; its body is logged at DEBUG, never passed on."""
    ref = reference()
    status = response.status_code
    log.debug("upstream %s answered %d (ref %s): %s", provider, status, ref, response.text[:2000])
    retry_after = _retry_after_s(response.headers.get("retry-after"))
    if status in (401, 403):
        message = f"the upstream provider refused earshot's credentials (ref {ref})"
    elif status == 429:
        message = f"the upstream provider is rate limiting (ref {ref})"
    elif status < 500:
        message = f"the upstream provider rejected the request (ref {ref})"
    else:
        message = f"the upstream provider failed (ref {ref})"
    transient = is_transient_status(status)
    return UpstreamError(message, transient=transient, status=status, retry_after_s=retry_after)


def transport_error(provider: str, error: Exception) -> UpstreamError:
    """The UpstreamError for a connect error, timeout or dropped connection (always transient)."""
    ref = reference()
    log.debug("upstream %s unreachable (ref %s): %r", provider, ref, error)
    if isinstance(error, httpx.TimeoutException | TimeoutError):
        return UpstreamError(f"the upstream provider timed out (ref {ref})", transient=True, status=504)
    return UpstreamError(f"the upstream provider is unreachable (ref {ref})", transient=True, status=502)


def closed_error(provider: str, code: int | None, reason: str = "") -> UpstreamError:
    """The UpstreamError for a provider's WebSocket closing on us mid-stream."""
    ref = reference()
    log.debug("upstream %s closed the socket with %s %r (ref %s)", provider, code, reason[:500], ref)
    transient = code is None or code in TRANSIENT_CLOSE_CODES
    what = "failed" if transient else "rejected the stream"
    return UpstreamError(f"the upstream provider {what} (ref {ref})", transient=transient, status=502)


def _retry_after_s(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
