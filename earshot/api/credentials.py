"""Where callers put their API key: every scheme the SDKs we speak use."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

OPENAI_KEY_SUBPROTOCOL = "openai-insecure-api-key."


def credential_from(
    headers: Mapping[str, str], query: Mapping[str, str], subprotocols: Sequence[str] = ()
) -> str | None:
    """The API key a request or WebSocket handshake carries, or None.

    Accepted: `Authorization: Bearer K` (OpenAI), `Authorization: Token K` (Deepgram), `api-key: K` (Azure),
    the subprotocols `openai-insecure-api-key.K` and `token`, `K` (browsers), and `?api_key=K`.
    """
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    for header in ("api-key", "x-api-key"):
        if headers.get(header, "").strip():
            return headers[header].strip()
    for index, protocol in enumerate(subprotocols):
        if protocol.startswith(OPENAI_KEY_SUBPROTOCOL) and len(protocol) > len(OPENAI_KEY_SUBPROTOCOL):
            return protocol[len(OPENAI_KEY_SUBPROTOCOL) :]
        if protocol.lower() == "token" and index + 1 < len(subprotocols) and subprotocols[index + 1].strip():
            return subprotocols[index + 1].strip()
    api_key = query.get("api_key", "").strip()
    return api_key or None


_QUERY_KEY = re.compile(r"((?:^|[?&])api_key=)[^&\s\"']*", re.IGNORECASE)


def redact_query_keys(text: str) -> str:
    """`text` with the value of every `api_key=` query parameter replaced by `***`."""
    return _QUERY_KEY.sub(r"\1***", text)


class QueryKeyRedactor(logging.Filter):
    """Keeps keys sent as `?api_key=` out of log lines (uvicorn logs each WebSocket handshake's path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any("api_key=" in str(arg).lower() for arg in record.args):
            record.args = tuple(
                redact_query_keys(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        if isinstance(record.msg, str) and "api_key=" in record.msg.lower():
            record.msg = redact_query_keys(record.msg)
        return True


def redact_server_logs() -> None:
    """Redact keys from the loggers a server writes request paths to; keep upstream URLs out of INFO."""
    # httpx logs every request's URL at INFO; upstream URLs stay at DEBUG.
    for name in ("httpx", "httpcore"):
        upstream_logger = logging.getLogger(name)
        upstream_logger.setLevel(max(logging.WARNING, upstream_logger.level))
    for name in ("uvicorn.error", "uvicorn.access", "uvicorn"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, QueryKeyRedactor) for f in logger.filters):
            logger.addFilter(QueryKeyRedactor())
