"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the matching status."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

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

log = logging.getLogger(__name__)

_TYPE_BY_STATUS = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


class OpenAIError(Exception):
    """A request failure to report to the caller in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type_ = type_
        self.headers = headers or {}

    @property
    def type(self) -> str:
        """OpenAI's error type for the status."""
        if self.type_ is not None:
            return self.type_
        if self.status >= 500:
            return "server_error"
        return _TYPE_BY_STATUS.get(self.status, "invalid_request_error")

    def body(self) -> dict[str, dict[str, str | None]]:
        """The JSON error body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        """The HTTP response carrying this error."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    @classmethod
    def denied(cls, denial: AccessDenied) -> OpenAIError:
        """The OpenAI error for a refused caller, with Retry-After where waiting helps."""
        message = str(denial)
        if isinstance(denial, InvalidKey):
            return cls(401, message, code="invalid_api_key", type_="invalid_request_error")
        if isinstance(denial, ModelNotAllowed):
            return cls(403, message, code="model_not_allowed", param="model")
        if isinstance(denial, InsufficientCredits):
            # The openai SDK retries 429s unless told not to; more credit won't appear by retrying.
            return cls(
                429,
                message,
                code="insufficient_quota",
                type_="insufficient_quota",
                headers={"x-should-retry": "false"},
            )
        if isinstance(denial, ServerDraining):
            return cls(
                503,
                message,
                code="server_shutting_down",
                type_="server_error",
                headers={"Retry-After": str(denial.retry_after_s)},
            )
        if isinstance(denial, RateLimited):
            code = "concurrency_limit_exceeded" if denial.concurrency else "rate_limit_exceeded"
            return cls(
                429, message, code=code, type_="requests", headers={"Retry-After": str(denial.retry_after_s)}
            )
        return cls(403, message, code="forbidden")

    @classmethod
    def from_engine(cls, failure: EngineError | ServerBusy) -> OpenAIError:
        """The OpenAI error for a failed engine or provider; its message is already safe to show."""
        if isinstance(failure, ServerBusy):
            # The server is full, not the caller over its limits: 503, which the SDKs retry after the hint.
            return cls(
                503,
                str(failure),
                code="server_busy",
                type_="server_error",
                headers={"Retry-After": str(max(1, round(failure.retry_after_s)))},
            )
        if not isinstance(failure, UpstreamError):
            return cls(500, f"the engine failed: {failure}", code="engine_error")
        status = failure.status or 502
        if not failure.transient and 400 <= status < 500 and status not in (401, 403):
            caller_status = 400
        elif status in (503, 504):
            caller_status = status
        else:
            caller_status = 502
        headers = {}
        if failure.retry_after_s is not None and caller_status == 503:
            headers["Retry-After"] = str(max(1, round(failure.retry_after_s)))
        return cls(caller_status, str(failure), code="upstream_error", headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Make every failure, expected or not, answer in OpenAI's error shape without internals."""

    async def on_openai_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OpenAIError)
        request.state.outcome = exc.code or exc.type
        return exc.response()

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = "not_found" if exc.status_code == 404 else None
        message = (
            str(exc.detail) if exc.status_code != 404 else f"no route for {request.method} {request.url.path}"
        )
        return OpenAIError(exc.status_code, message, code=code).response()

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        message = f"invalid value for {param}: {first.get('msg', 'invalid request')}"
        return OpenAIError(400, message, code="invalid_value", param=param).response()

    async def on_denied(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AccessDenied)
        error = OpenAIError.denied(exc)
        request.state.outcome = error.code
        return error.response()

    async def on_client_gone(request: Request, exc: Exception) -> JSONResponse:
        request.state.outcome = "client_closed"
        return OpenAIError(400, "the client closed the connection", code="client_closed").response()

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        log.error("unhandled error incident=%s route=%s", incident, request.url.path, exc_info=exc)
        request.state.outcome = "error"
        return OpenAIError(
            500, f"internal server error (incident {incident})", code="internal_error"
        ).response()

    app.add_exception_handler(OpenAIError, on_openai_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(AccessDenied, on_denied)
    app.add_exception_handler(ClientDisconnect, on_client_gone)
    app.add_exception_handler(Exception, on_unexpected)
