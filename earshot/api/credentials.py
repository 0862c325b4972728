"""Where callers put their API key: every scheme the SDKs we speak use."""

from __future__ import annotations

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
