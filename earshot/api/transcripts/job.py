"""One transcript's work, told as it goes: the cache, decoding, credit, the engine's segments, the store.

The job knows no wire format: it reports `JobEvent`s to a callback, which the SSE route feeds to its event
writer and the plain route waits out. Whatever ends it, it reports exactly one `Finished` or `Failed`, and
only a `Finished` document was stored.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from earshot.accounts.errors import AccessDenied
from earshot.api.admission import Admission, outcome_of
from earshot.api.context import Gateway
from earshot.api.failures import Failure, of_denial, of_engine
from earshot.api.transcripts.documents import Document, Paragraph, ParagraphBuilder, paragraphs_json
from earshot.api.uploads import decode_upload
from earshot.audio.decode import AudioDecodeError, AudioTooLong, EmptyAudio
from earshot.audio.pcm import Audio
from earshot.closing import closing
from earshot.engines.base import EngineError, TranscribeOptions, base_language
from earshot.routing.gate import ServerBusy, watching_queue
from earshot.routing.router import Route
from earshot.store.records import Outcome, TranscriptRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Queued:
    """The engine call waits in its model's queue, `position - 1` calls ahead of it."""

    position: int


@dataclass(frozen=True, slots=True)
class Started:
    """The engine started on `total_time` seconds of audio."""

    total_time: float


@dataclass(frozen=True, slots=True)
class Transcribed:
    """The engine got through `current_time` seconds; `paragraphs` is the whole text so far."""

    paragraphs: tuple[Paragraph, ...]
    current_time: float


@dataclass(frozen=True, slots=True)
class Finished:
    """The stored document (or the cached one)."""

    document: Document


@dataclass(frozen=True, slots=True)
class Failed:
    """Nothing was stored; `cause` is what went wrong, `failure` what the caller is told."""

    failure: Failure
    cause: BaseException


JobEvent = Queued | Started | Transcribed | Finished | Failed


@dataclass(frozen=True, slots=True)
class TranscriptUpload:
    """What the caller sent: the file, what to call it, and how to transcribe it."""

    audio: bytes
    content_type: str | None
    name: str
    language: str | None
    use_cache: bool


class _GateReporter:
    """Passes a gate's queue positions on as Queued events, and the first slot taken as Started."""

    def __init__(self, emit: Callable[[JobEvent], None], total_time: float) -> None:
        self.emit = emit
        self.total_time = total_time
        self.started = False

    def queued(self, position: int) -> None:
        if not self.started:
            self.emit(Queued(position))

    def admitted(self) -> None:
        self.start()

    def start(self) -> None:
        if not self.started:
            self.started = True
            self.emit(Started(self.total_time))


class TranscriptJob:
    """Transcribe one upload into a stored document for the admitted caller; `outcome` says how it ended."""

    def __init__(
        self,
        gateway: Gateway,
        admission: Admission,
        route: Route,
        upload: TranscriptUpload,
        document_id: str,
        queue_wait_s: float | None = None,
    ) -> None:
        self.gateway = gateway
        self.admission = admission
        self.route = route
        self.upload = upload
        self.document_id = document_id
        # How long the engine call may wait for a model's slot (None: the model's own max_queue_wait_s).
        self.queue_wait_s = queue_wait_s
        self.repository = gateway.transcripts
        # Seconds of audio, once decoded (a cache hit decodes nothing).
        self.audio_seconds = 0.0
        self.outcome: Outcome = "client_closed"

    async def run(self, emit: Callable[[JobEvent], None]) -> None:
        """Do the work, reporting to `emit`; never raises what it can tell as a Failed event."""
        ended: Finished | Failed
        try:
            ended = await self._run(emit)
        except (AudioDecodeError, AudioTooLong) as e:
            ended = Failed(self._audio_failure(e), e)
        except (EngineError, ServerBusy) as e:
            log.error("model %s failed on transcript %s: %s", self.route.model_id, self.document_id, e)
            ended = Failed(of_engine(e), e)
        except AccessDenied as e:
            ended = Failed(of_denial(e), e)
        except Exception as e:
            # The answer may have started, so the failure can only be told as an event.
            incident = uuid.uuid4().hex[:12]
            log.exception("transcript %s failed incident=%s", self.document_id, incident)
            ended = Failed(Failure(500, "internal_error", f"internal server error (incident {incident})"), e)
        if isinstance(ended, Finished):
            self.outcome = "ok"
        elif ended.failure.status < 500 and not isinstance(ended.cause, EngineError):
            self.outcome = "rejected"  # the caller's audio or credit: nothing was done
        else:
            self.outcome = outcome_of(ended.cause)
        emit(ended)

    async def _run(self, emit: Callable[[JobEvent], None]) -> Finished:
        owner = self.admission.key_id
        if self.upload.use_cache:
            cached = await self.repository.get(self.document_id, owner)
            if cached is not None:
                return Finished(Document.of(cached, cached=True))
        audio = await decode_upload(
            self.upload.audio,
            self.upload.content_type,
            self.gateway.settings.max_audio_seconds,
            self.gateway.decode_limiter,
        )
        self.audio_seconds = audio.duration_s
        await self.admission.reserve(round(audio.duration_s * 1000))
        paragraphs = await self._transcribe(audio, emit)
        now = datetime.now(UTC)
        language = self.upload.language
        stored = await self.repository.put(
            TranscriptRecord(
                id=self.document_id,
                key_id=owner,
                name=self.upload.name,
                model=self.route.model_id,
                language=base_language(language) if language else self.route.engine.language,
                duration_s=audio.duration_s,
                paragraphs=tuple(paragraphs_json(paragraphs)),
                validated=None,
                created_at=now,
                updated_at=now,
            )
        )
        return Finished(Document.of(stored))

    async def _transcribe(self, audio: Audio, emit: Callable[[JobEvent], None]) -> list[Paragraph]:
        started_at = time.perf_counter()
        options = TranscribeOptions(language=self.upload.language)
        paragraphs = ParagraphBuilder()
        reporter = _GateReporter(emit, audio.duration_s)
        segments = self.route.engine.transcribe_segments(audio, options)
        with watching_queue(reporter, self.queue_wait_s):
            async with closing(segments) as stream:
                async for segment in stream:
                    reporter.start()  # where no gate said so (an engine routed without one)
                    paragraphs.add(segment)
                    emit(Transcribed(tuple(paragraphs.paragraphs), segment.end))
        reporter.start()
        self.gateway.metrics.engine_latency.labels(self.route.model_id).observe(
            time.perf_counter() - started_at
        )
        return paragraphs.paragraphs

    def _audio_failure(self, error: AudioDecodeError | AudioTooLong) -> Failure:
        if isinstance(error, AudioTooLong):
            limit_s = self.gateway.settings.max_audio_seconds
            return Failure(400, "audio_too_long", f"audio is longer than the {limit_s:g} s limit")
        if isinstance(error, EmptyAudio):
            return Failure(400, "empty_file", "the file contains no audio")
        return Failure(400, "invalid_audio", str(error))
