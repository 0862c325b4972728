"""The admin API: keys and runtime settings, guarded by EARSHOT_ADMIN_TOKEN."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from earshot.accounts.keys import UNSET, ApiKey, KeyChanges
from earshot.api.context import Gateway, get_gateway
from earshot.api.openai.errors import OpenAIError
from earshot.dials import MAX_RATE, MAX_SESSIONS, DialError
from earshot.routing.catalog import ModelNotFound
from earshot.routing.smoke import check_model

router = APIRouter(prefix="/admin", include_in_schema=True, tags=["admin"])


def is_admin(request: Request, gateway: Gateway) -> bool:
    """Whether the request carries the admin token as its bearer credential."""
    token = gateway.settings.admin_token
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if token is None or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.get_secret_value().encode())


async def require_admin(request: Request, gateway: Annotated[Gateway, Depends(get_gateway)]) -> Gateway:
    """FastAPI dependency: the Gateway, for admin callers only."""
    if gateway.settings.admin_token is None:
        raise OpenAIError(403, "the admin API is disabled: set EARSHOT_ADMIN_TOKEN", code="admin_disabled")
    if not is_admin(request, gateway):
        raise OpenAIError(
            401, "invalid admin token", code="invalid_admin_token", type_="invalid_request_error"
        )
    return gateway


AdminDep = Annotated[Gateway, Depends(require_admin)]
# A century of audio: far past any real grant, well inside what the credit columns hold exactly.
MAX_CREDITS_SECONDS = 100 * 365 * 86_400.0


def _utc(value: datetime | None) -> datetime | None:
    """Times without a zone are UTC, as in the CLI."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


UtcDatetime = Annotated[datetime | None, AfterValidator(_utc)]


class KeyCreate(BaseModel):
    """A new key's settings."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    models: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=1000
    )
    credits_seconds: float | None = Field(default=None, ge=0, le=MAX_CREDITS_SECONDS, allow_inf_nan=False)
    rpm: int | None = Field(default=None, ge=1, le=MAX_RATE)
    max_sessions: int | None = Field(default=None, ge=1, le=MAX_SESSIONS)
    expires_at: UtcDatetime = None


class KeyUpdate(BaseModel):
    """Changes to a key; a field set to null clears that limit, an absent field is left alone."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    models: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=1000
    )
    credits_seconds: float | None = Field(default=None, ge=0, le=MAX_CREDITS_SECONDS, allow_inf_nan=False)
    rpm: int | None = Field(default=None, ge=1, le=MAX_RATE)
    max_sessions: int | None = Field(default=None, ge=1, le=MAX_SESSIONS)
    expires_at: UtcDatetime = None

    def changes(self) -> KeyChanges:
        given = self.model_fields_set
        return KeyChanges(
            name=self.name,
            models=tuple(self.models) if self.models is not None else None if "models" in given else UNSET,
            credits_seconds=self.credits_seconds if "credits_seconds" in given else UNSET,
            rpm=self.rpm if "rpm" in given else UNSET,
            max_sessions=self.max_sessions if "max_sessions" in given else UNSET,
            expires_at=self.expires_at if "expires_at" in given else UNSET,
        )


def _found(key: ApiKey | None, key_id: str) -> dict[str, Any]:
    if key is None:
        raise OpenAIError(404, f"no API key with id {key_id!r}", code="key_not_found")
    return key.to_json()


@router.post("/keys", status_code=201)
async def create_key(body: KeyCreate, gateway: AdminDep) -> dict[str, Any]:
    """Create a key; the response is the only place its plaintext ever appears."""
    key, plaintext = await gateway.accounts.keyring.create(
        body.name,
        models=tuple(body.models) if body.models is not None else None,
        credits_seconds=body.credits_seconds,
        rpm=body.rpm,
        max_sessions=body.max_sessions,
        expires_at=body.expires_at,
    )
    return {**key.to_json(), "key": plaintext}


@router.get("/keys")
async def list_keys(gateway: AdminDep) -> dict[str, Any]:
    """Every key, without secrets."""
    return {"object": "list", "data": [key.to_json() for key in await gateway.accounts.keyring.list()]}


@router.get("/keys/{key_id}")
async def get_key(key_id: str, gateway: AdminDep) -> dict[str, Any]:
    """One key, without its secret."""
    return _found(await gateway.accounts.keyring.get(key_id), key_id)


@router.patch("/keys/{key_id}")
async def update_key(key_id: str, body: KeyUpdate, gateway: AdminDep) -> dict[str, Any]:
    """Change a key's name, models, credits or limits."""
    return _found(await gateway.accounts.keyring.update(key_id, body.changes()), key_id)


@router.post("/keys/{key_id}/revoke")
@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, gateway: AdminDep) -> dict[str, Any]:
    """Revoke a key: every worker refuses it within a second."""
    key = _found(await gateway.accounts.keyring.revoke(key_id), key_id)
    await gateway.accounts.revocations.publish(key_id)
    return key


@router.get("/settings")
async def get_settings(gateway: AdminDep) -> dict[str, Any]:
    """The runtime dials as this worker sees them."""
    return gateway.accounts.dials.current.model_dump()


@router.delete("/settings/{name}", response_model=None)
async def reset_setting(name: str, gateway: AdminDep) -> JSONResponse:
    """Return one dial to its configured default on every worker."""
    try:
        dials = await gateway.accounts.dials.reset([name])
    except DialError as e:
        raise OpenAIError(404, str(e), code="setting_not_found") from e
    return JSONResponse(dials.model_dump())


@router.put("/settings", response_model=None)
async def put_settings(changes: dict[str, Any], gateway: AdminDep) -> JSONResponse:
    """Change runtime dials; every worker applies them within a second."""
    try:
        dials = await gateway.accounts.dials.set(changes)
    except DialError as e:
        raise OpenAIError(400, str(e), code="invalid_value") from e
    return JSONResponse(dials.model_dump())


@router.post("/models/{model_id}/test")
async def test_model(model_id: str, gateway: AdminDep) -> dict[str, Any]:
    """Smoke-check a model's own provider for each of its capabilities: ok and latency, or the error."""
    catalog = gateway.router.catalog
    try:
        canonical = catalog.resolve(model_id)
    except ModelNotFound as e:
        raise OpenAIError(404, f"the model {model_id!r} does not exist", code="model_not_found") from e
    results = await check_model(canonical, catalog.models[canonical], gateway.router.engines[canonical])
    return {
        "model": canonical,
        "ok": all(result.ok for result in results),
        "checks": [result.as_json() for result in results],
    }
