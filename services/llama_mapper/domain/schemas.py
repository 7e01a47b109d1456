"""JSON Schemas from schemas/ (draft 2020-12): the single source of truth for records and configs."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from llama_mapper.domain.errors import InvalidArgument

SCHEMA_NAMES = (
    "detector-output",
    "mapper-output",
    "document-input",
    "document-output",
    "analyst-context",
    "analyst-output",
    "training-config",
)


@cache
def load_schema(name: str) -> dict[str, Any]:
    path = resources.files("llama_mapper.schemas") / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def _registry() -> Registry:
    """Every schema by its `$id`, so one can refer to another's parts (`mapper-output.json#/...`)
    without a copy and without fetching anything."""
    schemas = [load_schema(name) for name in SCHEMA_NAMES]
    return Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas
    )


@cache
def validator(name: str) -> Draft202012Validator:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=_registry())


def json_path(error: ValidationError) -> str:
    """`$.lora.r`-style path of the offending value, the part of a message people act on."""
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def validate(name: str, instance: Any) -> None:
    """Raises InvalidArgument naming the JSON path of the first (deepest) problem."""
    errors = sorted(validator(name).iter_errors(instance), key=lambda e: len(e.absolute_path))
    if errors:
        error = errors[-1]
        raise InvalidArgument(f"{name}: {json_path(error)}: {error.message}")
