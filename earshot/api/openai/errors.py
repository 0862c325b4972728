"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the matching status."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from earshot.accounts.errors import AccessDenied, ModelNotAllowed
from earshot.api.failures import Failure, of_denial, of_engine
from earshot.engines.base import EngineError
from earshot.routing.gate import ServerBusy

log = logging.getLogger(__name__)

_TYPE_BY_STATUS = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
# The error types OpenAI gives these codes where the status alone would say otherwise.
_TYPE_BY_CODE = {
    "invalid_api_key": "invalid_request_error",
    "insufficient_quota": "insufficient_quota",
    "rate_limit_exceeded": "requests",
    "concurrency_limit_exceeded": "requests",
    "server_shutting_down": "server_error",
    "server_busy": "server_error",
}


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
    def of(cls, failure: Failure, param: str | None = None) -> OpenAIError:
        """A refusal or failure in OpenAI's shape, with Retry-After where waiting helps."""
        headers = {}
        if failure.retry_after_s is not None:
            headers["Retry-After"] = str(failure.retry_after_s)
        if failure.final:
            # The openai SDK retries 429s unless told not to.
            headers["x-should-retry"] = "false"
        return cls(
            failure.status,
            failure.message,
            code=failure.code,
            param=param,
            type_=_TYPE_BY_CODE.get(failure.code),
            headers=headers,
        )

    @classmethod
    def denied(cls, denial: AccessDenied) -> OpenAIError:
        """The OpenAI error for a refused caller."""
        return cls.of(of_denial(denial), param="model" if isinstance(denial, ModelNotAllowed) else None)

    @classmethod
    def from_engine(cls, failure: EngineError | ServerBusy) -> OpenAIError:
        """The OpenAI error for a failed engine or provider; its message is already safe to show."""
        return cls.of(of_engine(failure))


def invalid_form_field(error: ValidationError) -> OpenAIError:
    """The 400 for a form whose first bad field fails validation, naming that field."""
    first = error.errors()[0]
    param = str(first["loc"][0]) if first["loc"] else None
    return OpenAIError(400, f"invalid {param}: {first['msg']}", code="invalid_value", param=param)


def invalid_json_body(error: ValidationError) -> OpenAIError:
    """The 400 for a JSON body that fails validation, naming the first bad field's dotted path."""
    first = error.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    message = first["msg"].removeprefix("Value error, ")
    return OpenAIError(400, f"invalid {param or 'body'}: {message}", code="invalid_value", param=param)


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
