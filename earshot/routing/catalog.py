"""The model catalog: which model ids earshot serves and which engine, with which options, serves each."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Capability = Literal["transcribe", "stream", "realtime"]
KNOWN_ENGINES = ("pocketsphinx", "null")
OPENAI_DEFAULT_MODEL_ID = "whisper-1"


class CatalogError(Exception):
    """The catalog file is missing, unreadable or inconsistent."""


class ModelSpec(BaseModel):
    """One servable model: the engine that runs it and the engine's options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Literal["pocketsphinx", "null"]
    options: dict[str, Any] = Field(default_factory=dict)
    capabilities: tuple[Capability, ...] = ("transcribe", "stream", "realtime")
    owned_by: str = "earshot"
    description: str = ""
    price: float = Field(default=0.0, ge=0, description="Cost per unit of audio")
    unit: Literal["second", "minute"] = Field(default="second", description="minute rounds up per request")


class CatalogFile(BaseModel):
    """The YAML file's shape."""

    model_config = ConfigDict(extra="forbid")

    default_model: str | None = None
    aliases: dict[str, str] = Field(default_factory=dict)
    models: dict[str, ModelSpec]

    @model_validator(mode="after")
    def _references_exist(self) -> CatalogFile:
        if not self.models:
            raise ValueError("the catalog needs at least one model")
        if self.default_model is not None and self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not one of the models")
        for alias, target in self.aliases.items():
            if target not in self.models:
                raise ValueError(f"alias {alias!r} points at unknown model {target!r}")
            if alias in self.models:
                raise ValueError(f"alias {alias!r} is also a model id")
        return self


class ModelNotFound(LookupError):
    """No model or alias has this id."""


class Catalog:
    """Model ids and aliases resolved to specs; `whisper-1` means the default model unless configured."""

    def __init__(self, models: dict[str, ModelSpec], default_model: str, aliases: dict[str, str]) -> None:
        self.models = models
        self.default_model = default_model
        self.aliases = dict(aliases)
        if OPENAI_DEFAULT_MODEL_ID not in models:
            self.aliases.setdefault(OPENAI_DEFAULT_MODEL_ID, default_model)
        self.created = int(time.time())

    @classmethod
    def embedded(cls) -> Catalog:
        """The catalog with no config file: pocketsphinx's bundled en-US model."""
        return cls({"pocketsphinx": ModelSpec(engine="pocketsphinx")}, "pocketsphinx", {})

    @classmethod
    def from_file(cls, path: Path) -> Catalog:
        """Load and check a catalog YAML file."""
        try:
            raw = yaml.safe_load(path.read_text())
        except OSError as e:
            raise CatalogError(f"cannot read catalog {path}: {e.strerror}") from e
        except yaml.YAMLError as e:
            raise CatalogError(f"catalog {path} is not valid YAML: {e}") from e
        try:
            parsed = CatalogFile.model_validate(raw)
        except ValidationError as e:
            raise CatalogError(f"catalog {path} is invalid:\n{e}") from e
        default = parsed.default_model or next(iter(parsed.models))
        return cls(parsed.models, default, parsed.aliases)

    @classmethod
    def load(cls, path: Path | None) -> Catalog:
        """The file's catalog, or the embedded one when no file is given."""
        return cls.embedded() if path is None else cls.from_file(path)

    def resolve(self, model_id: str | None) -> str:
        """The canonical model id for an id or alias; None means the default model."""
        if not model_id:
            return self.default_model
        if model_id in self.models:
            return model_id
        if model_id in self.aliases:
            return self.aliases[model_id]
        raise ModelNotFound(model_id)

    def names_of(self, canonical: str) -> set[str]:
        """Every id that means this model: its own and its aliases'."""
        return {canonical, *(alias for alias, target in self.aliases.items() if target == canonical)}

    def public_ids(self) -> list[str]:
        """Every id a caller may use: models, then aliases."""
        return [*self.models, *self.aliases]
