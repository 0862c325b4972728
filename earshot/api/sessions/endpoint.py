"""The sessions routes: create, list, read and end sessions; push-to-talk; text turns streamed over SSE, their
client tool outputs, and approval decisions.

Another key's session is a 404 (never a 403), so ids can't be probed. Every route that calls a model is
admitted and metered like any request (one usage record however it ends); a turn holds the session's turn
lock for as long as it streams, so a second turn is a 409 `session_busy`.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from earshot.accounts.keys import check_model
from earshot.api.admission import Admission, outcome_of
from earshot.api.context import Gateway, get_gateway, key_id_of
from earshot.api.openai.errors import OpenAIError, invalid_json_body
from earshot.api.openai.rest import (
    TranscriptionParams,
    decode_form_audio,
    read_form,
    read_json_body,
    require_language,
)
from earshot.api.sessions.protocol import (
    ApprovalDecision,
    ResponseEvents,
    SessionCreate,
    ToolOutput,
    UserMessage,
    session_json,
    sse,
)
from earshot.api.uploads import body_pace
from earshot.engines.base import EngineError, TranscribeOptions, UpstreamError
from earshot.routing.catalog import ChatModelNotFound, ModelNotFound
from earshot.routing.gate import ServerBusy
from earshot.store.records import KeyRecord, NewItem, Outcome, SessionRecord
from earshot.voice.chat import ChatRoute
from earshot.voice.conversation import (
    Conversation,
    approval_response,
    denial_output,
    function_call_output,
    new_id,
    user_message,
)
from earshot.voice.turn import NoChatModel, Turn
from earshot.voice.turn_lock import SessionBusy

log = logging.getLogger(__name__)
router = APIRouter()
GatewayDep = Annotated[Gateway, Depends(get_gateway)]
BodyT = TypeVar("BodyT", bound=BaseModel)
MAX_JSON_BYTES = 1024 * 1024
DEFAULT_PAGE = 20
MAX_PAGE = 100
ABANDONED_REASON = "abandoned: the conversation moved on before a decision"


async def _body(request: Request, gateway: Gateway, shape: type[BodyT]) -> BodyT:
    raw = await read_json_body(request, MAX_JSON_BYTES, body_pace(gateway))
    try:
        return shape.model_validate_json(raw or b"{}")
    except ValidationError as e:
        raise invalid_json_body(e) from e


class AlreadyDecided(OpenAIError):
    """A decision that lost: the 409 carries the winning decision beside the error."""

    def __init__(self, approval_id: str, winning: dict[str, Any]) -> None:
        super().__init__(409, f"approval request {approval_id!r} was already decided", code="already_decided")
        self.winning = winning

    def body(self) -> dict[str, Any]:  # type: ignore[override]
        return {**super().body(), "decision": self.winning}


def _not_found(session_id: str) -> OpenAIError:
    return OpenAIError(404, f"no session {session_id!r}", code="session_not_found", param="id")


async def _owned(gateway: Gateway, session_id: str, key: KeyRecord | None) -> SessionRecord:
    session = await gateway.sessions.get(session_id, key_id_of(key))
    if session is None:
        raise _not_found(session_id)
    return session


def _active(session: SessionRecord) -> None:
    if session.state != "active":
        raise OpenAIError(409, f"session {session.id!r} has ended", code="session_ended")


@router.post("/v1/sessions", status_code=201)
async def create_session(request: Request, gateway: GatewayDep) -> JSONResponse:
    """Start a conversation owned by the caller's key."""
    key = await gateway.identify(request)
    body = await _body(request, gateway, SessionCreate)
    chat_model = body.chat_model
    if chat_model is not None or gateway.router.catalog.default_chat_model is not None:
        try:
            chat_model = gateway.router.catalog.resolve_chat(chat_model)
        except ChatModelNotFound as e:
            message = f"the chat model {body.chat_model!r} does not exist"
            raise OpenAIError(404, message, code="model_not_found", param="chat_model") from e
        if key is not None:
            check_model(key, chat_model, {chat_model})
    now = datetime.now(UTC)
    record = SessionRecord(
        id=new_id("sess"),
        key_id=key_id_of(key),
        end_user=body.end_user,
        chat_model=chat_model,
        instructions=body.instructions,
        tools=tuple(body.tools),
        voice=body.voice,
        state="active",
        created_at=now,
        updated_at=now,
        ended_at=None,
    )
    await gateway.sessions.create(record)
    return JSONResponse(session_json(record, []), status_code=201)


@router.get("/v1/sessions")
async def list_sessions(
    request: Request,
    gateway: GatewayDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="sessions per page")] = DEFAULT_PAGE,
    after: Annotated[str | None, Query(description="the last id of the page before")] = None,
) -> dict[str, Any]:
    """The caller's sessions, newest first (without their items)."""
    key = await gateway.identify(request)
    records = await gateway.sessions.page(key_id_of(key), limit=limit + 1, after=after)
    data = [session_json(record) for record in records[:limit]]
    return {
        "object": "list",
        "data": data,
        "has_more": len(records) > limit,
        "last_id": data[-1]["id"] if data else None,
    }


@router.get("/v1/sessions/{session_id}")
async def get_session(session_id: str, request: Request, gateway: GatewayDep) -> dict[str, Any]:
    """One of the caller's sessions, with its items in order."""
    session = await _owned(gateway, session_id, await gateway.identify(request))
    return session_json(session, await gateway.sessions.items(session.id))


@router.post("/v1/sessions/{session_id}/end")
async def end_session(session_id: str, request: Request, gateway: GatewayDep) -> dict[str, Any]:
    """End one of the caller's sessions: it keeps its items and takes no more turns."""
    key = await gateway.identify(request)
    ended = await gateway.sessions.end(session_id, key_id_of(key), datetime.now(UTC))
    if ended is None:
        raise _not_found(session_id)
    return session_json(ended)


@router.post("/v1/sessions/{session_id}/transcribe")
async def push_to_talk(session_id: str, request: Request, gateway: GatewayDep) -> dict[str, Any]:
    """Push-to-talk: a short clip's text, for the user to review (it is not added to the conversation)."""
    dials = gateway.accounts.dials.current
    admission = await gateway.admit(
        request, bucket="transcribe", route="sessions.transcribe", ip_rpm=dials.push_to_talk_ip_rpm
    )
    async with admission:
        _active(await _owned(gateway, session_id, admission.key))
        form = await read_form(request, dials.push_to_talk_max_bytes, body_pace(gateway))
        params = TranscriptionParams.from_form(form)
        requested = params.model
        try:
            route = gateway.router.route_for(requested, "transcribe")
        except ModelNotFound as e:
            raise OpenAIError(
                404, f"the model {requested!r} does not exist", code="model_not_found", param="model"
            ) from e
        if route is None:
            message = f"model {requested!r} and its fallbacks do not offer transcribe"
            raise OpenAIError(400, message, code="unsupported_model", param="model")
        request.state.model = route.model_id
        admission.use_model(
            requested or route.model_id, route, gateway.router.catalog.names_of(route.model_id)
        )
        require_language(route, params.language, route.model_id)
        audio = await decode_form_audio(form, gateway)
        request.state.audio_seconds = audio.duration_s
        await admission.reserve(round(audio.duration_s * 1000))
        try:
            options = TranscribeOptions(language=params.language, prompt=params.prompt)
            transcript = await gateway.transcribe(route, audio, options)
        except ServerBusy as e:
            raise OpenAIError.from_engine(e) from e
        except EngineError as e:
            # The provider's failure stays in the log (chained); the caller learns only that it failed.
            message = str(e) if isinstance(e, UpstreamError) else "the speech engine failed"
            raise OpenAIError(502, message, code="upstream_error") from e
        return {"text": transcript.text, "model": route.model_id, "duration": round(audio.duration_s, 3)}


async def _turn_admission(
    request: Request, gateway: Gateway, session_id: str, route_name: str
) -> tuple[Admission, SessionRecord, ChatRoute]:
    admission = await gateway.admit(request, bucket="sessions", route=route_name)
    try:
        session = await _owned(gateway, session_id, admission.key)
        _active(session)
        chat = _chat_route(gateway, session, admission)
    except BaseException as e:
        await admission.finish(outcome_of(e))
        raise
    return admission, session, chat


def _chat_route(gateway: Gateway, session: SessionRecord, admission: Admission) -> ChatRoute:
    try:
        route = gateway.chat.route(session.chat_model)
    except ChatModelNotFound as e:
        message = (
            f"the session's chat model {session.chat_model!r} is not configured"
            if session.chat_model
            else "this session has no chat model: the server's catalog has no chat_models"
        )
        raise OpenAIError(400, message, code="no_chat_model") from e
    admission.ticket.model = route.model_id
    return route


async def _start_turn(
    request: Request,
    gateway: Gateway,
    admission: Admission,
    session: SessionRecord,
    chat: ChatRoute,
    prepare: Callable[[Turn], Awaitable[tuple[list[NewItem], list[dict[str, Any]]]]],
) -> Response:
    """Hold the session's turn lock, let `prepare(turn)` store what opens the turn, then stream the turn.

    `prepare` returns (items to store first, call items to announce) once the lock is held.
    """
    locks = contextlib.AsyncExitStack()
    try:
        await locks.enter_async_context(gateway.turn_locks.hold(session.id))
    except SessionBusy as e:
        raise OpenAIError(409, str(e), code="session_busy") from e
    try:
        turn = Turn(gateway.sessions, session, chat)
        opening, announce = await prepare(turn)
    except BaseException:
        await locks.aclose()
        raise
    admission.hand_off()
    return StreamingResponse(
        _stream(turn, opening, announce, admission, locks),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    turn: Turn,
    opening: list[NewItem],
    announce: list[dict[str, Any]],
    admission: Admission,
    locks: contextlib.AsyncExitStack,
) -> AsyncIterator[str]:
    writer = ResponseEvents(turn.response_id)
    outcome: Outcome = "client_closed"
    try:
        for event in writer.created():
            yield sse(event)
        try:
            async for turn_event in turn.run(opening, announce):
                for event in writer.feed(turn_event, turn.prompt_tokens, turn.completion_tokens):
                    yield sse(event)
            outcome = "ok"
        except NoChatModel as e:
            outcome = "rejected"
            for event in writer.failed("no_chat_model", str(e)):
                yield sse(event)
        except (EngineError, ServerBusy) as e:
            log.error("session %s: chat model failed: %s", turn.session.id, e)
            outcome = outcome_of(e)
            code = "server_busy" if isinstance(e, ServerBusy) else "upstream_error"
            for event in writer.failed(code, str(e), turn.prompt_tokens, turn.completion_tokens):
                yield sse(event)
        except Exception:
            # The response has started, so the failure can only be told as an `error` event.
            incident = uuid.uuid4().hex[:12]
            log.exception("session %s: turn failed incident=%s", turn.session.id, incident)
            outcome = "error"
            for event in writer.failed("internal_error", f"internal server error (incident {incident})"):
                yield sse(event)
    finally:
        await locks.aclose()
        admission.count_tokens(turn.prompt_tokens, turn.completion_tokens)
        await admission.finish(outcome)


@router.post("/v1/sessions/{session_id}/messages")
async def send_message(session_id: str, request: Request, gateway: GatewayDep) -> Response:
    """A text turn: the user's message, then the model's answer streamed as Realtime response events."""
    admission, session, chat = await _turn_admission(request, gateway, session_id, "sessions.messages")
    async with admission:
        body = await _body(request, gateway, UserMessage)

        async def prepare(turn: Turn) -> tuple[list[NewItem], list[dict[str, Any]]]:
            # Calls left unanswered (the client never ran them, nobody decided) get an output first, so the
            # model never sees an unanswered call.
            conversation = Conversation(await gateway.sessions.items(session.id))
            for approval in conversation.undecided_approvals():
                await gateway.sessions.decide(
                    session.id, approval.id, False, ABANDONED_REASON, datetime.now(UTC)
                )
            repairs = Conversation(await gateway.sessions.items(session.id)).repairs()
            return [*repairs, user_message(body.content)], []

        return await _start_turn(request, gateway, admission, session, chat, prepare)


@router.post("/v1/sessions/{session_id}/tool_outputs")
async def send_tool_output(session_id: str, request: Request, gateway: GatewayDep) -> Response:
    """A client tool's result: continues the paused turn (streamed like a text turn)."""
    admission, session, chat = await _turn_admission(request, gateway, session_id, "sessions.tool_outputs")
    async with admission:
        body = await _body(request, gateway, ToolOutput)

        async def prepare(turn: Turn) -> tuple[list[NewItem], list[dict[str, Any]]]:
            waiting = Conversation(await gateway.sessions.items(session.id)).waiting()
            if body.call_id not in waiting.outputs:
                raise OpenAIError(
                    400,
                    f"no call {body.call_id!r} is waiting for an output",
                    code="unknown_call",
                    param="call_id",
                )
            return [function_call_output(body.call_id, body.output)], []

        return await _start_turn(request, gateway, admission, session, chat, prepare)


@router.post("/v1/sessions/{session_id}/approvals/{approval_id}")
async def decide_approval(
    session_id: str, approval_id: str, request: Request, gateway: GatewayDep
) -> Response:
    """A person's decision on an approval request; the first decision wins, a later one is a 409
    `already_decided` with the winning decision. The winner's answer continues the turn: an approved call
    goes to the client to run, a denied one is given to the model as the tool's result."""
    admission, session, chat = await _turn_admission(request, gateway, session_id, "sessions.approvals")
    async with admission:
        body = await _body(request, gateway, ApprovalDecision)
        decision = await gateway.sessions.decide(
            session.id, approval_id, body.approve, body.reason, datetime.now(UTC)
        )
        if decision is None:
            raise OpenAIError(
                404, f"no approval request {approval_id!r}", code="approval_not_found", param="id"
            )
        winning = {"approve": decision.request.approve, "reason": decision.request.reason}
        if not decision.won:
            raise AlreadyDecided(approval_id, winning)
        call_id = decision.request.call_id

        async def prepare(turn: Turn) -> tuple[list[NewItem], list[dict[str, Any]]]:
            opening = [approval_response(approval_id, call_id, body.approve, body.reason)]
            if not body.approve:
                return [*opening, function_call_output(str(call_id), denial_output(body.reason))], []
            call = Conversation(await gateway.sessions.items(session.id)).calls.get(call_id)
            return opening, [call.data] if call is not None else []

        try:
            return await _start_turn(request, gateway, admission, session, chat, prepare)
        except OpenAIError as e:
            if e.code != "session_busy":
                raise
            # The turn that asked still holds the session (a voice conversation waiting on this decision): the
            # decision is recorded and that turn continues it.
            return JSONResponse(
                {"approval_request_id": approval_id, **winning, "continued_by": "session"}, 202
            )
