"""Relaying a `/v1/realtime` transcription session to a provider's own Realtime socket (OpenAI, Azure).

`RealtimeRelay` is sans-I/O: fed client and upstream events, it returns what to send each way and how much
audio to meter. It translates the beta and GA dialects both ways, shows the client earshot's own session
object (never the provider's model or session), and hides upstream error details behind a reference.
The sockets are driven by `api/realtime_relay_socket.py`.
"""

from __future__ import annotations

import binascii
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from earshot.api.live.actions import CloseSocket, EndReason, ModelRefused, Send
from earshot.api.realtime import server_events as events
from earshot.api.realtime.client_events import (
    InvalidEvent,
    appended_audio,
    binary_not_supported,
    model_param,
    parse_event,
    unknown_event,
    update_dialect,
    updated_settings,
)
from earshot.api.realtime.endings import ending_actions
from earshot.api.realtime.session import Dialect, RealtimeSettings
from earshot.audio.pcm import float_to_pcm16, pcm16_to_float
from earshot.audio.raw import RawAudioReader
from earshot.engines.realtime_upstream import UPSTREAM_RATE_HZ, RealtimeTarget, session_update
from earshot.engines.upstream import reference
from earshot.routing.catalog import ModelNotFound

log = logging.getLogger(__name__)

# Upstream error types that are about what the client sent: their text is passed on (scrubbed).
CLIENT_ERROR_TYPES = frozenset({"invalid_request_error"})


@dataclass(frozen=True, slots=True)
class ToUpstream:
    """Send one JSON event to the provider."""

    message: str


@dataclass(frozen=True, slots=True)
class Metered:
    """Audio the client appended, in milliseconds."""

    audio_ms: float


RelayAction = Send | ToUpstream | Metered


class RealtimeRelay:
    """One relayed transcription session, without I/O."""

    def __init__(
        self,
        settings: RealtimeSettings,
        dialect: Dialect,
        target: RealtimeTarget,
        model_id: str,
        canonical: Callable[[str], str],
        choose: Callable[[str], str],
    ) -> None:
        self.settings = settings
        self.dialect = dialect
        self.target = target
        self.model_id = model_id
        self._canonical = canonical
        self._choose = choose
        self._resampler: Any = None
        self._raw = RawAudioReader(self.settings.raw_format)
        self._own_updates = 0

    def upstream_opened(self) -> list[RelayAction]:
        """The session update that sets the provider up as this session's settings say."""
        self._own_updates += 1
        return [ToUpstream(self._upstream_update())]

    def from_client(self, text: str) -> list[RelayAction]:
        """What to do with one client event."""
        try:
            message, event_id = parse_event(text)
            kind = message.get("type")
            passed: dict[str, Any] = (
                {"type": kind} if event_id is None else {"type": kind, "event_id": event_id}
            )
            if kind == "input_audio_buffer.append":
                return self._append(message, passed)
            if kind in ("input_audio_buffer.commit", "input_audio_buffer.clear"):
                return [ToUpstream(json.dumps(passed))]
            if kind in ("session.update", "transcription_session.update"):
                return self._update(kind, message.get("session"), event_id)
            raise unknown_event(kind, event_id)
        except InvalidEvent as e:
            return [e.send()]

    def from_client_bytes(self) -> list[RelayAction]:
        """Binary frames aren't part of the protocol."""
        return [binary_not_supported()]

    def from_upstream(self, text: str) -> list[RelayAction]:
        """What the client sees of one provider event."""
        try:
            event = json.loads(text)
        except (ValueError, RecursionError):
            log.debug("upstream %s sent a frame that is not JSON", self.target.provider)
            return []
        if not isinstance(event, dict):
            return []
        kind = str(event.get("type"))
        if kind.endswith("session.created"):
            return [Send(events.session(self.dialect, "created", self.settings))]
        if kind.endswith("session.updated"):
            if self._own_updates:
                self._own_updates -= 1
                return []
            return [Send(events.session(self.dialect, "updated", self.settings))]
        if kind in ("conversation.item.created", "conversation.item.added"):
            event["type"] = (
                "conversation.item.created" if self.dialect == "beta" else "conversation.item.added"
            )
            return [Send(json.dumps(event))]
        if kind == "conversation.item.done" and self.dialect == "beta":
            return []
        if kind == "error":
            return [Send(self._upstream_error(event))]
        if kind == "conversation.item.input_audio_transcription.failed":
            ref = reference()
            log.debug("upstream %s failed an item (ref %s): %s", self.target.provider, ref, text[:2000])
            event["error"] = {
                "type": "transcription_failed",
                "code": "upstream_error",
                "message": f"the upstream provider failed (ref {ref})",
                "param": None,
            }
            return [Send(json.dumps(event))]
        return [Send(text)]

    def ending(self, reason: EndReason, message: str) -> list[Send | CloseSocket]:
        """The error event and close when the server ends the session, as the local path sends them."""
        return [
            action for action in ending_actions(reason, message) if isinstance(action, Send | CloseSocket)
        ]

    # --- client events ---

    def _append(self, message: dict[str, Any], passed: dict[str, Any]) -> list[RelayAction]:
        audio, raw = appended_audio(message, passed.get("event_id"))
        ms_before = self._raw.ms_read
        pcm16 = self._raw.read(raw)
        audio_ms = self._raw.ms_read - ms_before
        rate_hz = self.settings.pcm_rate_hz
        if self.settings.encoding == "pcm16" and rate_hz != UPSTREAM_RATE_HZ:
            # The provider takes 24 kHz only; earshot takes any rate, so the relay converts.
            if self._resampler is None:
                self._resampler = soxr.ResampleStream(rate_hz, UPSTREAM_RATE_HZ, 1, dtype="float32")
            resampled = np.asarray(self._resampler.resample_chunk(pcm16_to_float(pcm16)), dtype=np.float32)
            audio = binascii.b2a_base64(float_to_pcm16(resampled), newline=False).decode()
        # Otherwise the provider takes the client's bytes as they are, and joins split frames itself.
        return [Metered(audio_ms), ToUpstream(json.dumps({**passed, "audio": audio}))]

    def _update(self, kind: str, session: object, event_id: str | None) -> list[RelayAction]:
        self.dialect, checked = update_dialect(kind, session, event_id)
        updated = updated_settings(self.settings, self.dialect, checked, event_id)
        if updated.model != self.settings.model:
            refused = self._refuse_model(updated.model)
            if refused is not None:
                raise InvalidEvent(refused.code, refused.message, event_id, model_param(self.dialect))
        if updated.raw_format != self.settings.raw_format:
            self._resampler = None
            self._raw = RawAudioReader(updated.raw_format)
        self.settings = updated
        return [ToUpstream(self._upstream_update())]

    def _refuse_model(self, requested: str) -> ModelRefused | None:
        try:
            canonical = self._canonical(requested)
        except ModelNotFound:
            return ModelRefused("model_not_found", f"the model {requested!r} does not exist")
        if canonical != self.model_id:
            return ModelRefused(
                "model_locked",
                f"this session is relayed to {self.model_id!r}; open a new session with ?model= for another",
            )
        try:
            self._choose(requested)
        except ModelRefused as e:
            return e
        return None

    def _upstream_update(self) -> str:
        settings = self.settings
        update = session_update(
            self.target.dialect,
            self.target.model,
            encoding=settings.encoding,
            language=settings.language,
            prompt=settings.prompt,
            turn_detection=settings.turn_detection,
            noise_reduction=settings.noise_reduction,
            include=settings.include,
        )
        return json.dumps(update)

    # --- upstream events ---

    def _upstream_error(self, event: dict[str, Any]) -> str:
        details = event.get("error") if isinstance(event.get("error"), dict) else {}
        assert isinstance(details, dict)
        kind = str(details.get("type") or "server_error")
        code = str(details.get("code") or "upstream_error")
        message = str(details.get("message") or "")
        if kind in CLIENT_ERROR_TYPES:
            message = message.replace(self.target.model, self.model_id)
        else:
            ref = reference()
            log.debug(
                "upstream %s sent an error (ref %s): %s", self.target.provider, ref, json.dumps(event)[:2000]
            )
            kind, code, message = (
                "server_error",
                "upstream_error",
                f"the upstream provider failed (ref {ref})",
            )
        param = details.get("param") if isinstance(details.get("param"), str) else None
        event_id = details.get("event_id") if isinstance(details.get("event_id"), str) else None
        return events.error(kind, code, message, event_id, param)
