"""How the server ends a Realtime transcription session: the `error` event saying why, then the close code.

Shared by the local session and the relay, so both end a session in the same words.
"""

from __future__ import annotations

import math
from dataclasses import replace

from earshot.api.live.actions import Action, CloseSocket, EndReason, Send
from earshot.api.realtime import server_events as events
from earshot.streaming.live_config import LiveConfig

CLOSE_OF_END: dict[EndReason, tuple[int, str]] = {
    "idle_timeout": (1000, "session_idle_timeout"),
    "max_duration": (1000, "session_expired"),
    "revoked": (1008, "invalid_api_key"),
    "insufficient_credits": (1008, "insufficient_quota"),
    "shutdown": (1012, "server_shutting_down"),
    "error": (1011, "server_error"),
    "client_closed": (1000, "client_closed"),
    "finished": (1000, "client_closed"),
    "bad_audio": (1007, "invalid_audio"),
}


def realtime_limits(defaults: LiveConfig) -> LiveConfig:
    """The server's live limits as a Realtime session has them: its maximum duration, but no idle timeout.

    OpenAI keeps a quiet session (client-side VAD, push-to-talk, a muted microphone) until its maximum
    duration, and clients treat any `error` as fatal, so a quiet session is never closed; a dead peer is found
    by the server's WebSocket pings instead.
    """
    return replace(defaults, idle_timeout_s=math.inf)


def ending_actions(reason: EndReason, message: str) -> list[Action]:
    """An `error` event saying why the server ends a session, then the close (local or relayed)."""
    code, error_code = CLOSE_OF_END[reason]
    if reason in ("client_closed", "finished"):
        return [CloseSocket(code)]
    kind = "server_error" if code >= 1011 else "invalid_request_error"
    if reason == "insufficient_credits":
        kind = "insufficient_quota"
    return [Send(events.error(kind, error_code, message, None)), CloseSocket(code, error_code)]
