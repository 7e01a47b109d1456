"""Every setting of every component, one pydantic-settings class each, each variable declared once."""

# `variables()` lists every MAPPER_* variable the code reads, with its default and description
# (`mapperctl settings` prints them; `make lint` checks that deploy manifests set no other).

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import AliasChoices
from pydantic_settings import BaseSettings


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    description: str
    owner: str


def settings_classes() -> list[type[BaseSettings]]:
    from llama_mapper.platform.settings.bench import LocustSettings
    from llama_mapper.platform.settings.common import CommonSettings
    from llama_mapper.platform.settings.evaluation import EvaluationSettings
    from llama_mapper.platform.settings.registry import RegistryClientSettings, RegistrySettings
    from llama_mapper.platform.settings.serving import ServingClientSettings, ServingSettings
    from llama_mapper.platform.settings.stack import RaySettings
    from llama_mapper.platform.settings.training import TrainingFaults
    from llama_mapper.platform.settings.validation import ValidationSettings

    return [
        CommonSettings,
        ValidationSettings,
        RegistrySettings,
        RegistryClientSettings,
        EvaluationSettings,
        ServingSettings,
        ServingClientSettings,
        RaySettings,
        LocustSettings,
        TrainingFaults,
    ]


def _names(cls: type[BaseSettings], field: str, info: Any) -> list[str]:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [c for c in alias.choices if isinstance(c, str) and c.startswith("MAPPER_")]
    return [f"{cls.model_config.get('env_prefix', '')}{field}".upper()]


def variables() -> Iterator[Variable]:
    """Every variable, in class order; nested models (MAPPER_SERVING_ENGINE__<FIELD>) expanded."""
    seen: set[str] = set()
    for cls in settings_classes():
        delimiter = cls.model_config.get("env_nested_delimiter")
        for field, info in cls.model_fields.items():
            nested = getattr(info.annotation, "model_fields", None)
            entries = [(name, info) for name in _names(cls, field, info)]
            if delimiter and nested:
                prefix = entries[0][0]
                entries = [(f"{prefix}{delimiter}{sub}".upper(), i) for sub, i in nested.items()]
            for name, described in entries:
                if name not in seen:
                    seen.add(name)
                    yield Variable(
                        name, _default(described), described.description or "", cls.__name__
                    )


def _default(info: Any) -> str:
    if info.is_required():
        return ""
    value = info.get_default(call_default_factory=True)
    return "" if value is None else str(value)
