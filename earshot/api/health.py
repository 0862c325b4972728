"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from earshot.api.context import Gateway, get_gateway

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(gateway: Annotated[Gateway, Depends(get_gateway)]) -> JSONResponse:
    """Every engine and synthesizer has loaded: 200 when ready, 503 while loading."""
    engines = {model_id: engine.ready for model_id, engine in gateway.router.engines.items()}
    synthesizers = gateway.router.synthesis.synthesizers
    speech_models = {model_id: synthesizer.ready for model_id, synthesizer in synthesizers.items()}
    ready = all(engines.values()) and all(speech_models.values())
    body = {"status": "ready" if ready else "loading", "engines": engines, "speech_models": speech_models}
    return JSONResponse(body, status_code=200 if ready else 503)
