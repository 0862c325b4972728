"""A live session's model: the one it asks for, if it exists, serves live audio and is allowed for the key."""

from __future__ import annotations

from earshot.accounts.errors import ModelNotAllowed
from earshot.api.admission import Admission
from earshot.api.context import Gateway
from earshot.api.live.actions import ModelRefused
from earshot.routing.catalog import ModelNotFound
from earshot.routing.router import Route


class ModelChooser:
    """Resolves a session's requested model: it must exist, serve live audio and be allowed for the key."""

    def __init__(
        self,
        gateway: Gateway,
        admission: Admission,
        capability: str,
        granted_by: dict[str, str] | None = None,
    ) -> None:
        self._gateway = gateway
        self._admission = admission
        self._capability = capability
        # A model asked for on behalf of another catalog name (a voice agent's speech model): the key must
        # list that name instead.
        self._granted_by = granted_by or {}
        self.route: Route | None = None
        # Once audio has been metered under one model, the session can't move to another.
        self.locked = False

    def __call__(self, requested: str | None) -> str:
        router = self._gateway.router
        try:
            route = router.route(requested)
        except ModelNotFound as e:
            raise ModelRefused("model_not_found", f"the model {requested!r} does not exist") from e
        if self.locked and self.route is not None and route.model_id != self.route.model_id:
            raise ModelRefused(
                "model_locked",
                "the transcription model can't change once audio has been appended; open a new session",
            )
        if self._capability not in route.spec.capabilities:
            raise ModelRefused(
                "model_not_supported", f"the model {route.model_id!r} does not serve live transcription"
            )
        grantor = self._granted_by.get(requested or "")
        names = {grantor} if grantor is not None else router.catalog.names_of(route.model_id)
        try:
            self._admission.use_model(grantor or requested or route.model_id, route, names)
        except ModelNotAllowed as e:
            raise ModelRefused("model_not_allowed", str(e)) from e
        self.route = route
        return route.model_id
