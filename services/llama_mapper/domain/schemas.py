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
from llama_mapper.domain.redaction import clip_words, redact

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
        raise InvalidArgument(f"{name}: {json_path(error)}: {_message(error)}")


def _message(error: ValidationError) -> str:
    """jsonschema's message, with the offending value quoted only when it reads as a short label:
    a value may be detected content, or megabytes, and the message goes back to the caller."""
    value, message = error.instance, error.message
    label_like = isinstance(value, str) and len(value) <= 64 and value.isprintable()
    if isinstance(value, str | dict | list) and not (label_like and redact(value) == value):
        kind = (
            f"a string of {len(value)} characters"
            if isinstance(value, str)
            else "an object"
            if isinstance(value, dict)
            else "a list"
        )
        message = message.replace(repr(value), kind)
    # Keys the caller chose ("'x' was unexpected") stay, bounded and redacted like any text.
    return redact(clip_words(message, 300))
